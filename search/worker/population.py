"""A worker's population (`--population K`): several claimed slots of one study, their trials
asked one after another (the sampler's constant liar spreads parallel asks) and trained
together by `Trainer.run_many`, each member then told on its own exactly as a solo trial is
(`TrialRunner._end`: pruned, diverged, stopped, failed with its kind, out of memory).

Each member keeps what a solo trial has: its slot's duties and seeded sampler before its
`ask`, its own heartbeat from its `ask` until it is told (so a kill -9 leaves every member to
the sweep, which retries each once), and its own checkpoint (its retry resumes from it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from search.store import optuna_private as private
from search.worker.heartbeat import Heartbeats
from search.worker.trial_run import Member, Opened, TrialRunner

log = logging.getLogger("lrsearch.worker.population")
#: The liveness row's current_trial column is this long at most.
CURRENT_TRIAL_CHARS = 64


class PopulationRunner(TrialRunner):
    """A TrialRunner that also runs several claimed slots of one study at once."""

    def run_slots(self, study_id: str, slots: Sequence[int]) -> None:
        """Run the trials of claimed slots of one study: one slot exactly as a solo trial,
        several as a population (a deleted study: nothing to run)."""
        if len(slots) == 1:
            self.run(study_id, slots[0])
            return
        self._ran_out = False
        opened = self._open(study_id, slots[0])
        if opened is None:
            return
        interval = self.resources.config.heartbeat_interval
        members: list[Member] = []
        try:
            with Heartbeats(self.resources.storage, interval) as beats:
                opened = self._ask(opened, slots, study_id, beats, members)
                self.resources.current_trial = describe(study_id, members)
                results = self._train(opened, members, study_id)
                for member, result in zip(members, results, strict=True):
                    try:
                        self._end(opened, member, result, study_id)
                    except Exception:  # the others are still told; this one is the sweep's
                        log.exception("trial %s could not be told", member.trial.number)
                    finally:
                        beats.drop(private.trial_id(member.trial))
        finally:
            self.resources.current_trial = None
        if self._ran_out:
            self._after_out_of_memory()

    def _ask(
        self,
        opened: Opened,
        slots: Sequence[int],
        study_id: str,
        beats: Heartbeats,
        members: list[Member],
    ) -> Opened:
        """Ask one trial per slot, each after its slot's duties, and beat for it at once.

        `ask` is never retried (a retry after a lost answer could create a second trial);
        when one fails after others were asked, those train and the slots left over are
        given back by the sweep, as any slot claimed but never turned into a trial."""
        for index, slot in enumerate(slots):
            try:
                if index:
                    opened = self._for_slot(opened, slot)
                trial = opened.study.ask()
            except Exception:
                if not members:
                    raise
                log.exception(
                    "study %s: %d of %d trials asked; the sweep gives back the other slots",
                    study_id,
                    len(members),
                    len(slots),
                )
                break
            beats.add(private.trial_id(trial))
            members.append(Member(trial, self._checkpoint_handle(trial, study_id)))
        return opened


def describe(study_id: str, members: Sequence[Member]) -> str:
    """What the liveness row shows: "<study id>/<trial numbers>", cut to fit its column."""
    text = f"{study_id}/{','.join(str(m.trial.number) for m in members)}"
    if len(text) <= CURRENT_TRIAL_CHARS:
        return text
    return text[: CURRENT_TRIAL_CHARS - 3] + "..."


__all__ = ["PopulationRunner", "describe"]
