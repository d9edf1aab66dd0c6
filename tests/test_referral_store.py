"""Listing and clearing referral entries in the store (Store.referral_sources / clear_referrals)."""
from __future__ import annotations

import pytest

from fastpath.errors import StoreError
from fastpath.records import ReferralInterval
from fastpath.referral_status import status_at
from fastpath.store import Store

from .conftest import config_from_yaml

# 2001 and 20010: one extension is a prefix of the other (keys b"2001/..." and b"20010/...")
SMALL = """{id: small, name: Small, country: GB, timezone: Europe/London,
           employees: [{extension: 2001, name: Ann}, {extension: 20010, name: Ben}, {extension: 2002, name: Cat}]}"""


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    s.load_config(config_from_yaml(SMALL))
    yield s
    s.close()


def put(store, ext, source, status="meeting"):
    store.put_referrals(ext, source, [ReferralInterval(100, 200, status, source=source)])


def test_referral_sources_lists_every_entry_sorted(store):
    """Should list extension -> sources for the whole table, in key order."""
    assert store.referral_sources() == {}
    put(store, "2002", "manual")
    put(store, "2001", "manual")
    put(store, "2001", "calendar:caldav")
    put(store, "20010", "calendar:ews")
    put(store, "9999", "calendar:graph")            # an extension no longer in the config: stale
    assert store.referral_sources() == {"2001": ["calendar:caldav", "manual"], "20010": ["calendar:ews"],
                                        "2002": ["manual"], "9999": ["calendar:graph"]}


def test_referral_sources_of_one_extension_is_not_fooled_by_a_longer_one(store):
    put(store, "2001", "manual")
    put(store, "20010", "calendar:ews")
    assert store.referral_sources("2001") == {"2001": ["manual"]}
    assert store.referral_sources("20010") == {"20010": ["calendar:ews"]}
    assert store.referral_sources("200") == {}
    assert store.referral_sources("2002") == {}


def test_clear_referrals_removes_one_source_only(store):
    """Clearing the manual status gives the calendar's back."""
    store.put_referrals("2001", "manual", [ReferralInterval(100, 200, "lunch", source="manual")])
    put(store, "2001", "calendar:caldav", "meeting")
    put(store, "2002", "manual")
    assert status_at(store.referrals("2001"), 150).status == "lunch"
    assert store.clear_referrals("2001", "manual") is True
    assert store.referral_sources() == {"2001": ["calendar:caldav"], "2002": ["manual"]}
    assert status_at(store.referrals("2001"), 150).status == "meeting"
    assert store.clear_referrals("2001", "manual") is False      # nothing left to clear
    assert store.clear_referrals("2003", "manual") is False


def test_clear_referrals_finds_and_clears_stale_entries(store):
    """The intended use: entries of extensions that are no longer employees are removed."""
    put(store, "2001", "manual")
    put(store, "9999", "calendar:graph")
    put(store, "9999", "manual")
    for ext, sources in store.referral_sources().items():
        if store.live(ext) is None:                  # not an employee any more
            for source in sources:
                assert store.clear_referrals(ext, source)
    assert store.referral_sources() == {"2001": ["manual"]}


@pytest.mark.parametrize("ext, source", [("", "manual"), ("20/01", "manual"), ("2001", "")])
def test_clear_referrals_rejects_bad_keys(store, ext, source):
    put(store, "2001", "manual")
    with pytest.raises(StoreError, match="bad referral key"):
        store.clear_referrals(ext, source)
    assert store.referral_sources() == {"2001": ["manual"]}


def test_read_only_store_cannot_clear(tmp_path):
    path = str(tmp_path / "ro")
    with Store(path) as writer:
        writer.load_config(config_from_yaml(SMALL))
        put(writer, "2001", "manual")
    with Store(path, readonly=True) as reader:
        assert reader.referral_sources() == {"2001": ["manual"]}
        with pytest.raises(StoreError, match="read-only"):
            reader.clear_referrals("2001", "manual")
    with Store(path) as writer:
        assert writer.referral_sources() == {"2001": ["manual"]}
