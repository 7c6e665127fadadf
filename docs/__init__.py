"""The Markdown documentation, installed as package data of ``leashed._docs`` (``leashed docs TOPIC``)."""
