"""The long-running process: host socket, build worker, web server."""
