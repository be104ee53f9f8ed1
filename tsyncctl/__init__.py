"""tsyncctl: control client for tsyncd."""
