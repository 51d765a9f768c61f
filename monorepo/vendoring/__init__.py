"""Vendoring and auditing: pull brings duni/ in line with the lock, verify checks it."""
