from __future__ import annotations

import numpy as np
import pytest
import torch

from agegender.config import ConfigError, DataConfig
from agegender.data.dataset import prepare_data
from agegender.data.sampling import parse_sampling, sample_weights
from agegender.training.loop import batch_indices

FOLDERS = ("data/utkface", "other/aaf")


def weights_of(terms, folder_of, ages, gender):
    age_range = np.stack([ages, ages], axis=1).astype(np.float32)
    return sample_weights(parse_sampling(terms, FOLDERS), np.array(folder_of, dtype=object), age_range,
                          np.array(gender, dtype=np.float32))  # fmt: skip


def test_an_images_weight_is_the_product_of_the_terms_it_matches():
    weights = weights_of(["aaf=2", "age:0-12=3", "gender:female=0.5", "age:70+=4"],
                         ["data/utkface", "other/aaf", "other/aaf", "data/utkface", "data/utkface"],
                         [30, 5, 12, 80, np.nan], [0, 1, 0, 0, 1])  # fmt: skip
    assert weights.tolist() == [1.0, 2 * 3 * 0.5, 2 * 3, 4.0, 0.5]


def test_no_terms_means_no_weights():
    assert weights_of([], ["data/utkface"], [30], [0]) is None


def test_a_folder_is_named_by_its_last_part_or_its_path():
    assert parse_sampling(["other/aaf=2", "utkface=1"], FOLDERS)[0].folder == "other/aaf"


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("aaf=-1", "weight must be in [0, 1000]"),
        ("aaf=nan", "weight must be in"),
        ("aaf=lots", "weight 'lots' is not a number"),
        ("fairface=2", "'fairface' is not a data folder of this run (folders: utkface, aaf)"),
        ("aaf", "must look like KEY=WEIGHT"),
        ("age:twelve=2", "age bands look like age:0-12 or age:70+"),
        ("age:12-3=2", "the band's end is below its start"),
        ("gender:other=2", "gender is male or female"),
    ],
)
def test_a_bad_term_is_one_clear_error(term, message):
    with pytest.raises(ConfigError, match="data.sampling: ") as error:
        parse_sampling([term], FOLDERS)
    assert message in str(error.value)


def test_all_weights_zero_is_an_error():
    with pytest.raises(ConfigError, match="every training image has weight 0"):
        weights_of(["utkface=0"], ["data/utkface"], [30], [0])


def test_an_epoch_draws_images_in_proportion_to_their_weights():
    weights = np.array([1.0, 1.0, 8.0, 0.0])
    drawn = torch.cat(batch_indices(4, 64, torch.Generator().manual_seed(0), weights)).numpy()
    counts = np.bincount(drawn, minlength=4) / len(drawn)
    assert len(drawn) == 4 and counts[3] == 0
    many = torch.cat([torch.cat(batch_indices(4, 4, torch.Generator().manual_seed(s), weights)) for s in range(500)])
    share = np.bincount(many.numpy(), minlength=4) / len(many)
    assert share == pytest.approx([0.1, 0.1, 0.8, 0.0], abs=0.03)


def test_prepare_data_weights_the_training_split_of_each_folder(utkface, labels_folder, cache_dir):
    config = DataConfig(path=(str(utkface.path), str(labels_folder.path)), image_size=32, cache_dir=str(cache_dir),
                        sampling=("labelled=5",))  # fmt: skip
    data = prepare_data(config)
    from_labels = np.array([s.path.parent == labels_folder.path for s in data.train.samples])
    assert from_labels.any() and (~from_labels).any()
    assert data.train.weight[from_labels].tolist() == [5.0] * from_labels.sum()
    assert data.train.weight[~from_labels].tolist() == [1.0] * (~from_labels).sum()
    assert data.val.weight is None


def test_prepare_data_refuses_a_term_naming_no_folder_before_decoding(utkface, cache_dir):
    config = DataConfig(path=str(utkface.path), image_size=32, cache_dir=str(cache_dir), sampling=("aaf=2",))
    with pytest.raises(ConfigError, match="'aaf' is not a data folder of this run"):
        prepare_data(config)
    assert not cache_dir.exists()
