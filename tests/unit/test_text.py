from warden.features.ingest.text import (
    caps_runs,
    extract_urls,
    hidden_text_marks,
    is_ip_literal,
    longest_run,
    url_host,
    url_hosts,
    visible_text_head,
    words,
)


def test_visible_text_drops_tags_and_entities() -> None:
    assert visible_text_head("<p>Hello&nbsp;<b>world</b></p>", 100) == (11, "Hello world")
    assert visible_text_head("<p>Hello&nbsp;<b>world</b></p>", 5) == (11, "Hello")


def test_extract_urls_finds_text_links_and_hrefs_once() -> None:
    urls = extract_urls("see http://a.example/x, and www.b.example.", '<a href="http://c.example">c</a>')
    assert urls == ["http://a.example/x", "www.b.example", "http://c.example"]


def test_hosts_and_ip_literals() -> None:
    assert url_host("HTTP://Example.COM:8080/x") == "example.com"
    assert url_host("www.example.org/path") == "www.example.org"
    assert url_host("http://[::1]/") == "::1"
    assert url_host("https://user@Example.COM./x") == "example.com"
    hosts = url_hosts(["http://A.example/", "ftp://b.example:21", "http://A.example/"])
    assert hosts == ("a.example", "b.example", "a.example")
    assert is_ip_literal("10.0.0.1")
    assert is_ip_literal("[2001:db8::1]")
    assert not is_ip_literal("example.com")
    assert not is_ip_literal("1.2.3")


def test_longest_run() -> None:
    assert longest_run("wow!!! really?!", "!?") == 3
    assert longest_run("", "!") == 0
    assert longest_run("!!\u00e9!!!", "!") == 3  # a non-ASCII character ends a run
    assert longest_run("\u00e9\u00e9\u00e9", "\u00e9") == 3


def test_capitals_words_and_hidden_styles() -> None:
    assert caps_runs("SAVE BIG NOW today, SALE ends") == 1
    assert caps_runs("SAVEBIG NOW\u00a0TODAY") == 1
    assert caps_runs("USA and UK") == 0
    assert words("Get $5,000.00 NOW - 12345 don't re-use it") == [
        "get",
        "$5,000.00",
        "now",
        "12345",
        "don't",
        "re-use",
    ]
    assert hidden_text_marks("<p STYLE='Display: None'>x</p><font size=0>") == 2


def test_hostile_html_is_linear() -> None:
    hostile = "<" * 200_000 + "a" * 10
    assert visible_text_head(hostile, 10**6)[1].endswith("a" * 10)
