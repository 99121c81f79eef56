from features.text import extract_urls, html_to_text, is_ip_literal, longest_run, url_host


def test_html_to_text_drops_tags_and_entities() -> None:
    assert html_to_text("<p>Hello&nbsp;<b>world</b></p>") == "Hello world"


def test_extract_urls_finds_text_links_and_hrefs_once() -> None:
    urls = extract_urls("see http://a.example/x, and www.b.example.", '<a href="http://c.example">c</a>')
    assert urls == ["http://a.example/x", "www.b.example", "http://c.example"]


def test_hosts_and_ip_literals() -> None:
    assert url_host("HTTP://Example.COM:8080/x") == "example.com"
    assert url_host("www.example.org/path") == "www.example.org"
    assert url_host("http://[::1]/") == "::1"
    assert is_ip_literal("10.0.0.1")
    assert not is_ip_literal("example.com")


def test_longest_run() -> None:
    assert longest_run("wow!!! really?!", "!?") == 3
    assert longest_run("", "!") == 0


def test_hostile_html_is_linear() -> None:
    hostile = "<" * 200_000 + "a" * 10
    assert html_to_text(hostile).endswith("a" * 10)
