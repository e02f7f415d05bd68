"""The component's entry point: `sluice build` names this module as the app. It imports the
job's own module, ``job``, and exports its ``run`` through the WIT world."""

import wit_world

import job as _job
from sluice import _run


class WitWorld(wit_world.WitWorld):
    def run(self, params: str):
        return _run(_job.run, params)
