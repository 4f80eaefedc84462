"""The champion's recipe is refit with the settings it was evaluated with, not today's."""

from flows.model_choice import TRAINING_KEYS, _recipe_of, config_hashes
from flows.settings import load_settings
from forecasting.train import TrainedModel


def test_a_kept_champion_is_refit_with_its_own_recipe():
    today = load_settings(None, environ={"NIGHTCAST_TRAIN__LEARNING_RATE": "0.01", "NIGHTCAST_TRAIN__THREADS": "1"})
    then = load_settings(None, environ={"NIGHTCAST_MODEL__HIDDEN_SIZE": "32", "NIGHTCAST_TRAIN__EPOCHS": "9"})
    evaluated = TrainedModel(
        None, None, None, [], [], 40, "", {"model": then.model.model_dump(), "train": then.train.model_dump()}
    )
    model, training = _recipe_of(evaluated, today)
    assert model == then.model and model.hidden_size == 32
    assert all(getattr(training, k) == getattr(then.train, k) for k in TRAINING_KEYS)  # lr 1e-3, 9 epochs
    assert training.threads == 1  # how to run it is today's business


def test_recipe_and_input_hashes():
    base = load_settings(None, environ={})
    lr = load_settings(None, environ={"NIGHTCAST_TRAIN__LEARNING_RATE": "0.01"})
    threads = load_settings(None, environ={"NIGHTCAST_TRAIN__THREADS": "1"})
    rsi = load_settings(None, environ={"NIGHTCAST_FEATURES__RSI_WINDOW": "10"})
    assert config_hashes(threads) == config_hashes(base)  # runtime settings define nothing
    assert config_hashes(lr)[0] != config_hashes(base)[0] and config_hashes(lr)[1] == config_hashes(base)[1]
    assert config_hashes(rsi)[1] != config_hashes(base)[1]  # other inputs: models cannot score each other's data
