"""Tasks found by short name (`task=dms`): one LightningDataModule per task."""
from datamodules.base import TrialDataModule, TrialSet
from datamodules.dms import DMSDataModule
from datamodules.neurogym import NeurogymDataModule
from datamodules.pattern import PatternDataModule
from datamodules.seqmnist import SeqMNISTDataModule

TASKS: dict[str, type[TrialDataModule]] = {"dms": DMSDataModule, "neurogym": NeurogymDataModule,
                                            "pattern": PatternDataModule, "seqmnist": SeqMNISTDataModule}


def build_datamodule(name: str, **params) -> TrialDataModule:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; choose one of: {', '.join(sorted(TASKS))}")
    return TASKS[name](**params)


__all__ = ["TASKS", "TrialDataModule", "TrialSet", "build_datamodule"]
