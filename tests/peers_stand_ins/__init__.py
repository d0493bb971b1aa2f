"""Pure-Python stand-ins for the compiled parts of the peers' released packages (tests marked ``peers``)."""
