"""examples/taskmaster: the original TaskMaster app rebuilt on taskevents (see README.md).
Run it as ``python examples/taskmaster/app.py --simulate-aws``."""
