"""Webhook endpoints, the outbox of messages, and their delivery (Standard Webhooks)."""
