"""HTTP: one-click unsubscribe, enrollment API, health."""
