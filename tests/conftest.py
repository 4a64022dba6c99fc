pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.api",
    "tests.fixtures.sandbox",
    "tests.fixtures.bot",
    "tests.fixtures.system",
]
