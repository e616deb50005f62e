"""Real servers the tests start for themselves on loopback, each in a throwaway directory."""
