"""The foundation every layer stands on; it imports nothing else of the package.

Errors a user can fix (``errors``), where the yaml defaults live (``paths``), the RecBole dependency and its
compatibility fixes (``deps``, ``compat``), atomic files and folders (``safe_io``), content keys of the on-disk
caches (``cache``), plain results helpers (``report``) and the experiment a command line asks for (``spec``).
"""
