"""``grouposcore demo``: a secured lighting group with a Group Manager, end to end.

:mod:`~grouposcore.demo.scenario` runs the story and checks each step (its configuration
and results are the plain data of :mod:`~grouposcore.demo.report`),
:mod:`~grouposcore.demo.view` shows it, :mod:`~grouposcore.demo.netns` finds (or makes) a
place where multicast on loopback works.
"""

from grouposcore.demo.scenario import DemoConfig, DemoReport, StepResult, run_demo

__all__ = ["DemoConfig", "DemoReport", "StepResult", "run_demo"]
