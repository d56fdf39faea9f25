from shared.core.migrations import run

run()
