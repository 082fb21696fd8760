"""The flows, one module each, all implementing ``base.Flow``; ``registry.FLOWS`` lists them."""
