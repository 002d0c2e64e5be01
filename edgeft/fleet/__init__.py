"""Federated fine-tuning on Flower: many devices fine-tune locally, a server combines their updates.

The device side (:mod:`edgeft.fleet.local`: a round of local training) and the server's model
(:mod:`edgeft.fleet.global_model`) need only onnxruntime and numpy; Flower's apps
(:mod:`edgeft.fleet.client_app`, :mod:`edgeft.fleet.server_app`) and the simulation
(:mod:`edgeft.fleet.simulate`) need the ``fleet`` extra (``pip install 'edgeft[fleet]'``).
"""
