import pytest

from engine import CapacityExhausted


@pytest.mark.backends()
async def test_hold_confirm_cancel_roundtrip(make_engine) -> None:
    engine = await make_engine()
    await engine.create_slot(5, 3)
    first = await engine.hold(5, "u1", "k1", 2)
    assert first.changed and first.hold.status == "held"
    with pytest.raises(CapacityExhausted) as info:
        await engine.hold(5, "u2", "k1", 2)
    assert info.value.remaining == 1
    confirmed = await engine.confirm(first.hold.hold_id, "u1")
    assert confirmed.hold.status == "confirmed"
    slot = await engine.slot(5)
    assert (slot.capacity, slot.remaining, slot.held, slot.confirmed) == (3, 1, 0, 2)
