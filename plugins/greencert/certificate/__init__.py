"""Certificates: build the document, render it for people, publish it atomically."""
