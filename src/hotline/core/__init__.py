"""The pure call core: events in, commands out. Nothing here does I/O, awaits or reads a
clock; the runner (`hotline.call.runner`) feeds it events with `now_ms` and executes what it
returns. A test keeps this package free of imports that do I/O."""
