"""Autoscalers for services on the shared cluster: how many replicas a service asks for."""
from llmos_sim.policies.autoscaling.base import Autoscaler, ScaleStep, ServiceLoad, StageLoad
from llmos_sim.policies.autoscaling.threshold import ThresholdAutoscaler

__all__ = ["Autoscaler", "ScaleStep", "ServiceLoad", "StageLoad", "ThresholdAutoscaler"]
