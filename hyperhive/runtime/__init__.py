"""Container backends behind one interface (`Runtime` in runtime.base); `kinds.py` names
them. Importing the package imports no backend: the workflow drives a `Runtime` without
loading them."""
