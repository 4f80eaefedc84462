"""Typed settings of the model, training, evaluation and publishing stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from features.settings import Section


class ModelSettings(Section):
    hidden_size: int = Field(64, ge=1, description="LSTM hidden units per layer")
    num_layers: int = Field(1, ge=1, description="stacked LSTM layers")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout between LSTM layers and in the head")
    attention: bool = Field(True, description="temporal attention over encoder states; false = plain LSTM ablation")
    attention_size: int = Field(32, ge=1, description="width of the additive attention scorer")


class TrainSettings(Section):
    epochs: int = Field(30, ge=1, description="maximum passes over the training span")
    batch_size: int = Field(256, ge=1, description="samples per optimisation step")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW peak learning rate (cosine decay over epochs)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="maximum global gradient norm")
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    seed: int = Field(7, description="seed for weights and batch order: same seed, same model on CPU")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto picks cuda > mps > cpu")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 = one per core")
    progress: bool = Field(True, description="show a progress bar while training (hidden when not a terminal)")


class PublishSettings(Section):
    calendar: str = Field("XNYS", description="exchange calendar for target dates (exchange_calendars name)")
    formats: list[Literal["parquet", "csv"]] = Field(
        ["parquet", "csv"], description="file formats written under outputs/"
    )
