"""The runtime around the domain core: one partition task that every driver feeds (worker, simulate,
replay, tests), the commit order of a batch, restore, dead letters, local state stores."""
