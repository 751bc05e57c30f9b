"""A standing federation: jobs submitted by admins, sites that decide what runs on their data."""
