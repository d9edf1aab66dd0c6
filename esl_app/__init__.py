"""Switchboard's application side: the command line, and (next) the Event Socket service."""
