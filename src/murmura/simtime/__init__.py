"""Simulated time: client speeds, availability and bandwidth, deadlines and async aggregation.

``profiles`` draws each client's speed, ``availability`` says when it is reachable, ``clock``
turns a training result into the seconds it took; ``deadline`` wraps a synchronous
simulation's strategy and executor (availability, over-selection, stragglers), and
``asynchronous`` runs FedAsync and FedBuff as an event queue. Strategies know nothing of it.
"""
