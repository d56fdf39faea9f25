"""The source document's demo tasks, on the platform's task class and routes.

add.delay(2, 3)                                   -> 5
chain(step1.s(2), step2.s(), step3.s())()         -> ((2 + 1) * 2) - 3 = 3
chord([add.s(i, i) for i in range(5)], sum_results.s())() -> 20
"""

from shared.service import Service


def add(x: int, y: int) -> int:
    return x + y


def multiply(x: int, y: int) -> int:
    return x * y


def step1(x: int) -> int:
    return x + 1


def step2(x: int) -> int:
    return x * 2


def step3(x: int) -> int:
    return x - 3


def sum_results(results: list[int]) -> int:
    return sum(results)


def register(service: Service) -> None:
    for task in (add, multiply, step1, step2, step3, sum_results):
        service.task()(task)
