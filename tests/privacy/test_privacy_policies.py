from __future__ import annotations

import pytest

from strongroom.errors import BadInput
from strongroom.privacy import BUILTIN_POLICIES, DeidEngine, load_policy


@pytest.mark.parametrize("name", BUILTIN_POLICIES)
def test_builtins_load_and_remove_cvv(name, make_engine):
    pol = load_policy(name)
    assert pol.entities["CVV"].name in ("redact", "tag")
    out = make_engine(name).deidentify_text("Card 4111 1111 1111 1111, CVV 987, PIN 4921").text
    assert "987" not in out and "4921" not in out and "4111 1111 1111 1111" not in out


def test_custom_policy_cannot_keep_cvv(tmp_path, secret):
    p = tmp_path / "lax.toml"
    p.write_text('name = "lax"\n[entities]\nCVV = "keep"\nPIN = { operator = "mask", keep_last = 4 }\n'
                 'CREDIT_CARD = "keep"\n[allow]\nvalues = ["321"]\n')
    pol = load_policy(str(p))
    assert pol.entities["CVV"].name == "redact" and pol.entities["PIN"].name == "redact"
    out = DeidEngine(pol, secret=secret).deidentify_text("security code 321 and pin 7788").text
    assert "321" not in out and "7788" not in out


def test_unknown_policy_and_operator(tmp_path):
    with pytest.raises(BadInput):
        load_policy("no-such-policy")
    p = tmp_path / "bad.toml"
    p.write_text('name="x"\n[entities]\nPERSON = "shred"\n')
    with pytest.raises(BadInput):
        load_policy(str(p))
    p.write_text("not = [valid")
    with pytest.raises(BadInput):
        load_policy(str(p))


def test_pci_masks_cards(make_engine):
    out = make_engine("pci-dss").deidentify_text("PAN 5500 0000 0000 0004 on file").text
    assert "0004" in out and "5500" not in out
