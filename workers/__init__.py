"""Distributed scans on RQ: the job functions (:mod:`workers.jobs`) and the worker process
(:mod:`workers.worker`)."""
