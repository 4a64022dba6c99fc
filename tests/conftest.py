pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.api",
    "tests.fixtures.sandbox",
    "tests.fixtures.bot",
    "tests.fixtures.demo",
    "tests.fixtures.system",
    "tests.fixtures.browser",
]
