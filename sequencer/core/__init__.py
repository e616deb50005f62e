"""Pure decisions: no I/O, no clock reads, no database. Inputs, the time included, are arguments."""
