"""The serving view types under their former module name: see :mod:`llmos_sim.serving.view`."""
from llmos_sim.serving.view import (COLUMNS, BatchDecision, KVMode, KVView, ReplicaView, SeqTable,  # noqa: F401
                                    TokenList, WaitingSeq)
