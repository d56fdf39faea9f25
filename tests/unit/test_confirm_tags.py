"""The confirm bookkeeping of ``confirmed_batch``, driven with the broker's exact frames.

RabbitMQ confirms each publish once, by ``basic.ack`` or ``basic.nack``, with
``multiple`` settling every publish up to the tag; it may confirm a higher tag while a
lower one is still pending (messages routed to different queues). A batch is confirmed
only when every one of its tags was acked. (The broker side:
tests/integration/test_confirmed_batch.py.)
"""

from shared.worker.confirms import Tags


def published(n: int) -> Tags:
    tags = Tags()
    for _ in range(n):
        tags.publish()
    return tags


def test_an_ack_of_a_higher_tag_does_not_confirm_the_lower_ones():
    tags = published(3)
    tags.ack(3, multiple=False)
    assert tags.outstanding == 2
    assert tags.nacked == 0


def test_a_multiple_ack_confirms_every_tag_up_to_it():
    tags = published(3)
    tags.ack(2, multiple=True)
    assert tags.outstanding == 1
    tags.ack(3, multiple=False)
    assert tags.outstanding == 0


def test_a_multiple_nack_after_an_ack_counts_each_tag_it_settles():
    tags = published(3)
    tags.ack(2, multiple=False)
    tags.nack(3, multiple=True)  # settles 1 and 3; 2 was acked
    assert (tags.outstanding, tags.nacked) == (0, 2)


def test_a_multiple_ack_then_a_multiple_nack_counts_only_the_rest():
    tags = published(4)
    tags.ack(2, multiple=True)
    tags.nack(4, multiple=True)
    assert (tags.outstanding, tags.nacked) == (0, 2)


def test_a_later_multiple_nack_never_cancels_an_earlier_nack():
    tags = published(5)
    tags.nack(2, multiple=False)
    tags.ack(5, multiple=False)
    tags.nack(4, multiple=True)  # settles 1, 3 and 4
    assert (tags.outstanding, tags.nacked) == (0, 4)


def test_a_tag_confirmed_twice_is_counted_once():
    tags = published(2)
    tags.nack(1, multiple=False)
    tags.nack(1, multiple=True)
    tags.ack(2, multiple=True)
    assert (tags.outstanding, tags.nacked) == (0, 1)
