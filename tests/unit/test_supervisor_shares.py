from paysched.supervisor import shares


def test_shares_split_the_concurrency() -> None:
    assert shares(3, 2) == [2, 1]
    assert shares(50, 4) == [13, 13, 12, 12]
    assert shares(7, 7) == [1] * 7
