"""A standing federation: a coordinator that serves a queue of jobs, and sites that wait for them.

``murmura server federation.toml`` (a config with a ``[federation]`` table) keeps jobs in
SQLite (``store``) and runs each as an ordinary run of the deployed coordinator
(``runner``); admins manage them over the job API (``service``, ``murmura job``); sites
started with ``murmura client --site site.toml`` (no ``--config``) wait for jobs, check each
against their policy (``policy``, ``site_guard``) and their lifetime privacy budget
(``budget``, ``spend``) and run the accepted ones (``site_loop``).
"""
