"""Attribution, the report and experiment lift over the email topics."""
