"""The lab: experiment tables (`experiments`), their reports (`report`, `laac_report`) and the
scaling grid (`scaling`). It reads runs and starts them through the CLI's train function; nothing
in the product imports it."""
