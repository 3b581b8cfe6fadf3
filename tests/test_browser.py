"""The chat UI in Debian's Chromium (headless), driven by Playwright, against a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-quic", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(live_server.url + "/")
    yield page
    context.close()


def ask(page, question: str) -> None:
    page.fill("#question", question)
    page.press("#question", "Enter")
    # Locator waits, not wait_for_function: the page's CSP (no eval) applies to the test's scripts too.
    sync_api.expect(page.locator(".msg.bot").last).to_be_attached()
    sync_api.expect(page.locator("#send")).to_be_enabled(timeout=30_000)


def test_answer_streams_with_a_chip_that_opens_the_highlighted_span(page):
    expect = sync_api.expect
    expect(page.locator("#starters button").first).to_be_visible()
    ask(page, "When did the CKFTA become law?")
    bot = page.locator(".msg.bot").last
    expect(bot).to_contain_text("January 29, 2022")
    chip = bot.locator("button.chip").first
    expect(chip).to_be_visible()
    expect(page.locator("#sources li .title").first).to_contain_text("Cambodia and South Korea")
    expect(page.locator("#status")).to_have_text("1 source cited.")
    chip.click()
    mark = page.locator("#reader-text mark")
    expect(mark).to_be_visible()
    expect(mark).to_contain_text("became law on January 29, 2022")
    expect(page.locator("#reader-title")).to_have_text("Cambodia and South Korea: deepening ties under Hun Manet")
    assert mark.evaluate("m => { const r = m.getBoundingClientRect(), c = m.closest('.reader-text').getBoundingClientRect();"
                         " return r.top >= c.top - 1 && r.bottom <= c.bottom + 1; }")
    page.screenshot(path=str(ARTIFACTS / "answer-with-citation.png"), full_page=True)


def test_off_topic_question_shows_the_not_found_state(page):
    ask(page, "Who won the 2022 FIFA World Cup?")
    bot = page.locator(".msg.bot").last
    sync_api.expect(bot).to_have_class("msg bot abstained")
    sync_api.expect(bot.locator(".badge")).to_have_text("Not in the articles")
    assert bot.locator("button.chip").count() == 0
    page.screenshot(path=str(ARTIFACTS / "not-found.png"), full_page=True)


def test_filters_offer_the_sources_and_a_range_that_matches_nothing_says_so(page):
    expect = sync_api.expect
    page.click("#filters summary")
    expect(page.locator("#filter-source option")).to_have_count(3)  # any source + the two bundled ones
    page.fill("#filter-after", "2001-01-01")  # the bundled articles carry no dates
    page.dispatch_event("#filter-after", "change")
    expect(page.locator("#filters-summary")).to_have_text("Filters (1 active)")
    ask(page, "When did the CKFTA become law?")
    bot = page.locator(".msg.bot").last
    expect(bot.locator(".badge")).to_have_text("No articles match the filters")
    expect(bot).to_contain_text("No articles match the filters (published after 2001-01-01")
    page.click("#filter-clear")
    expect(page.locator("#filters-summary")).to_have_text("Filters")
    page.select_option("#filter-source", index=1)
    ask(page, "When did the CKFTA become law?")
    sources = page.locator("#sources li .meta")
    chosen = page.locator("#filter-source").input_value()
    expect(sources.first).to_have_text(chosen)  # every cited passage is from the chosen source
    assert all(t == chosen for t in sources.all_text_contents())


def test_script_payload_is_shown_as_text(page):
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    ask(page, payload)
    sync_api.expect(page.locator(".msg.user").last).to_have_text(payload)
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".messages img, .messages script").count() == 0
    page.screenshot(path=str(ARTIFACTS / "script-as-text.png"), full_page=True)


def test_follow_up_new_conversation_keyboard_and_phone_width(page):
    ask(page, "What is the Cambodia-Korea Free Trade Agreement?")
    ask(page, "When did it become law?")
    sync_api.expect(page.locator(".msg.bot").last).to_contain_text("January 29, 2022")
    page.fill("#question", "line one")
    page.press("#question", "Shift+Enter")
    page.keyboard.type("line two")
    assert page.input_value("#question") == "line one\nline two"
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    page.set_viewport_size({"width": 375, "height": 740})
    ask(page, "Where is the new Cambodian embassy in Pakistan?")
    sync_api.expect(page.locator(".msg.bot").last).to_contain_text("Islamabad")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 380  # no horizontal scrolling at phone width
    page.screenshot(path=str(ARTIFACTS / "phone-width.png"), full_page=True)


def test_with_api_keys_the_page_asks_for_one_and_sends_it(browser, bundled_settings, query_embedder):
    from rag.serve.app import create_app
    from tests.conftest import LiveServer

    settings = bundled_settings.model_copy(update={"api_keys": ["s3cret"]})
    with LiveServer(create_app(settings, query_embedder)) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(server.url + "/")
        form = page.locator("#key-form")
        sync_api.expect(form).to_be_visible()  # the starters call got a 401
        page.fill("#api-key", "wrong")
        page.press("#api-key", "Enter")
        sync_api.expect(page.locator("#key-status")).to_have_text("That key was not accepted.")
        page.fill("#api-key", "s3cret")
        page.press("#api-key", "Enter")
        sync_api.expect(form).to_be_hidden()
        sync_api.expect(page.locator("#starters button").first).to_be_visible()
        ask(page, "When did the CKFTA become law?")
        sync_api.expect(page.locator(".msg.bot").last).to_contain_text("January 29, 2022")
        page.locator(".msg.bot button.chip").first.click()  # the article is fetched with the key too
        sync_api.expect(page.locator("#reader-text mark")).to_contain_text("January 29, 2022")
        assert errors == []  # nothing the page needs is blocked by its own CSP
        page.screenshot(path=str(ARTIFACTS / "api-key.png"), full_page=True)
        context.close()


def test_a_long_conversation_stays_under_the_body_limit(page):
    long_answer = "Cambodia " * 3000
    page.evaluate("""(text) => { for (let i = 0; i < 20; i++) state.history.push(
        { role: "user", content: "question " + i }, { role: "assistant", content: text }); }""", long_answer)
    ask(page, "When did it become law?")
    bot = page.locator(".msg.bot").last
    sync_api.expect(bot).not_to_contain_text("Error")
    sync_api.expect(bot).not_to_have_text("")


def test_a_thumbs_down_with_a_comment_is_saved_for_the_eval_set(page, bundled_settings):
    import uuid

    from rag.eval.feedback import FeedbackStore

    expect = sync_api.expect
    ask(page, "When did the CKFTA become law?")
    bot = page.locator(".msg.bot").last
    good, bad = bot.get_by_role("button", name="Good answer"), bot.get_by_role("button", name="Bad answer")
    expect(good).to_have_attribute("aria-pressed", "false")
    comment = bot.get_by_role("textbox", name="Comment on this answer (optional)")
    expect(comment).to_be_hidden()
    bad.click()
    expect(bad).to_have_attribute("aria-pressed", "true")
    expect(good).to_have_attribute("aria-pressed", "false")
    expect(comment).to_be_focused()
    note = f"It should say when it was signed ({uuid.uuid4().hex[:8]}) <b>bold</b>"
    comment.fill(note)
    bot.get_by_role("button", name="Send").click()
    expect(bot.locator(".feedback-status")).to_have_text("Thanks — feedback saved")
    for control in (good, bad, comment, bot.get_by_role("button", name="Send")):
        expect(control).to_be_disabled()
    assert bot.locator(".feedback b").count() == 0  # the comment is text, never markup
    page.screenshot(path=str(ARTIFACTS / "feedback.png"), full_page=True)
    store = FeedbackStore.beside(bundled_settings.index_dir)
    rows = [f for f in store.all() if f.comment == note]  # the server's index folder is shared with other tests
    store.close()
    assert len(rows) == 1 and rows[0].rating == -1 and rows[0].question == "When did the CKFTA become law?"
    assert "January 29, 2022" in rows[0].answer and rows[0].abstained is False
    assert [c["n"] for c in rows[0].citations] == [1] and "January 29, 2022" in rows[0].citations[0]["text"]


def test_an_uploaded_article_is_reported_and_then_answered_with_a_citation(browser, tmp_path, embedder, chunker,
                                                                            query_embedder):
    from rag.ingest.pipeline import ingest
    from rag.serve.app import create_app
    from rag.settings import Settings
    from tests.conftest import LiveServer, write_corpus

    expect = sync_api.expect
    root = tmp_path / "index"  # its own index: uploads never reach the session's bundled one
    ingest([write_corpus(tmp_path / "articles")], root, embedder, chunker, sentence_embedder=query_embedder)
    article = tmp_path / "kep-lighthouse.md"
    article.write_text("---\ntitle: Kep lighthouse repainted\nsource: example.org\n---\n\nThe lighthouse at Kep "
                       "was painted blue in 1931 by the harbour master Sok Dara.\n", encoding="utf-8")
    settings = Settings(index_dir=root, eval_reports_dir=tmp_path / "reports")
    with LiveServer(create_app(settings, query_embedder, ingest_embedder=embedder)) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(server.url + "/")
        page.get_by_text("Add articles").click()
        chooser = page.get_by_label("Articles to add")
        expect(chooser).to_be_visible()
        chooser.set_input_files(str(article))
        status = page.locator("#upload-status")
        expect(status).to_have_attribute("role", "status")
        expect(status).to_contain_text("1 article added or updated, 0 skipped", timeout=60_000)
        expect(page.locator("#upload-report li")).to_have_text("kep-lighthouse.md: added as uploads/kep-lighthouse")
        expect(page.locator("#upload-progress")).to_be_hidden()
        ask(page, "When was the lighthouse at Kep painted blue?")
        bot = page.locator(".msg.bot").last
        expect(bot).to_contain_text("1931")
        expect(page.locator("#sources li .title").first).to_have_text("[1] Kep lighthouse repainted")
        bot.locator("button.chip").first.click()
        expect(page.locator("#reader-text mark")).to_contain_text("painted blue in 1931")
        page.screenshot(path=str(ARTIFACTS / "upload.png"), full_page=True)
        context.close()


def test_the_conversation_survives_a_reload_until_a_new_one_starts(page):
    expect = sync_api.expect
    ask(page, "When did the CKFTA become law?")
    expect(page.locator(".msg.bot").last).to_contain_text("January 29, 2022")
    page.reload()
    expect(page.locator(".msg.user")).to_have_text(["When did the CKFTA become law?"])
    bot = page.locator(".msg.bot").last
    expect(bot).to_contain_text("January 29, 2022")
    expect(page.locator("#status")).to_have_text("Conversation restored (1 question).")
    bot.locator("button.chip").first.click()  # the restored citations still open their span
    expect(page.locator("#reader-text mark")).to_contain_text("became law on January 29, 2022")
    ask(page, "When did it become law?")  # the follow-up is read with the restored history
    expect(page.locator(".msg.bot").last).to_contain_text("January 29, 2022")
    page.click("#new-chat")
    page.reload()
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#starters button").first).to_be_visible()


AXE = Path(__file__).resolve().parents[1] / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations_in_any_state(browser, live_server, scheme):
    """axe-core (npm, installed by scripts/setup.sh --test) on the chat, reader, upload and not-found
    states, in the light and the dark theme (the page follows the system setting)."""
    if not AXE.is_file():
        pytest.skip("axe-core is not installed (bash scripts/setup.sh --test)")
    expect = sync_api.expect
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme, bypass_csp=True)
    page = context.new_page()
    page.goto(live_server.url + "/")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == ("rgb(20, 24, 30)" if scheme == "dark" else "rgb(246, 247, 249)")

    def serious(state: str) -> list[str]:
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})")
        assert any(rule["id"] == "color-contrast" for rule in result["passes"] + result["violations"]), state  # it ran
        bad = [f"{state}: {v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
        return bad

    problems = serious("start")
    ask(page, "When did the CKFTA become law?")
    expect(page.locator(".msg.bot .feedback").last).to_be_visible()
    problems += serious("answer")
    page.locator(".msg.bot button.chip").first.click()
    expect(page.locator("#reader-text mark")).to_be_visible()
    problems += serious("reader")
    page.click("#uploads summary")
    page.click("#filters summary")
    problems += serious("upload and filters")
    ask(page, "Who won the 2022 FIFA World Cup?")
    expect(page.locator(".msg.bot").last).to_have_class("msg bot abstained")
    problems += serious("not found")
    page.screenshot(path=str(ARTIFACTS / f"theme-{scheme}.png"), full_page=True)
    context.close()
    assert not problems, "\n".join(problems)
