"""The source document's demo tasks, on the platform's task class and routes.

add.delay(2, 3)                                   -> 5
chain(step1.s(2), step2.s(), step3.s())()         -> ((2 + 1) * 2) - 3 = 3
chord([add.s(i, i) for i in range(5)], sum_results.s())() -> 20
"""

from celery import Celery


def register(celery: Celery) -> None:
    @celery.task(name="reports.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @celery.task(name="reports.multiply", shared=False)
    def multiply(x: int, y: int) -> int:
        return x * y

    @celery.task(name="reports.step1", shared=False)
    def step1(x: int) -> int:
        return x + 1

    @celery.task(name="reports.step2", shared=False)
    def step2(x: int) -> int:
        return x * 2

    @celery.task(name="reports.step3", shared=False)
    def step3(x: int) -> int:
        return x - 3

    @celery.task(name="reports.sum_results", shared=False)
    def sum_results(results: list[int]) -> int:
        return sum(results)
