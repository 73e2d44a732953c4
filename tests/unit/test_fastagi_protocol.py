"""The sans-I/O FastAGI protocol against the real Asterisk transcripts and Asterisk's argument splitter."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.contract import GATEKEEPER_CAMPAIGN, GATEKEEPER_DECISION_ID, GATEKEEPER_REASON, GATEKEEPER_RESULT
from gatekeeper.fastagi.protocol import (
    MAX_COMMAND_LINE_BYTES,
    AgiEnvironment,
    AgiScript,
    DeadChannel,
    EnvironmentParser,
    Hangup,
    InvalidCommand,
    InvalidScript,
    LineTooLong,
    MalformedEnvironment,
    ProtocolError,
    Reply,
    ReplyParser,
    Success,
    TooManyLines,
    UnexpectedReply,
    UsageError,
    exec_mset,
    format_command,
    get_full_variable,
    get_variable,
    parse_agi_script,
    parse_environment,
    parse_replies,
    quote,
    set_variable,
    verbose,
)
from gatekeeper.simulator.fastagi import split_arguments
from tests.asterisk_sim.traces import Conversation, Kind, conversation, load_trace

FASTAGI_TRACES = ("fastagi-session.txt", "fastagi-hangup.txt", "fastagi-close.txt", "fastagi-pipelining.txt")
NO_CONTROL = st.characters(exclude_characters="\n\r\x00", exclude_categories=["Cs"])
SAFE_TEXT = st.text(alphabet=NO_CONTROL, max_size=200)


def all_conversations() -> list[Conversation]:
    return [conv for name in FASTAGI_TRACES for conv in load_trace(name)]


def session(number: int) -> Conversation:
    return conversation("fastagi-session.txt", f"Session {number}:")


def split(line: bytes) -> list[str]:
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    return split_arguments(line[:-1].decode())


# --------------------------------------------------------------------------------------------------
# constants


def test_channel_variable_names_are_the_public_contract() -> None:
    assert (GATEKEEPER_RESULT, GATEKEEPER_REASON, GATEKEEPER_DECISION_ID, GATEKEEPER_CAMPAIGN) == (
        "GATEKEEPER_RESULT",
        "GATEKEEPER_REASON",
        "GATEKEEPER_DECISION_ID",
        "GATEKEEPER_CAMPAIGN",
    )


# --------------------------------------------------------------------------------------------------
# Asterisk's argument splitter, checked against what the real Asterisk stored


def set_variable_round_trips() -> list[tuple[str, str]]:
    """(SET VARIABLE line, value Asterisk read back) for every accepted SET VARIABLE of the session trace."""
    wire = [e for e in session(2).after_environment if e.kind is not Kind.NOTE]
    pairs = []
    for index, event in enumerate(wire):
        if event.kind is Kind.SERVER and event.text.startswith("SET VARIABLE") and index + 3 < len(wire):
            reply, readback_command, readback = wire[index + 1], wire[index + 2], wire[index + 3]
            if reply.text == "200 result=1" and readback_command.text.startswith("GET VARIABLE"):
                match = re.fullmatch(r"200 result=1 \((.*)\)", readback.text)
                assert match is not None
                pairs.append((event.text, match[1]))
    return pairs


def test_the_trace_has_the_ten_quoting_cases() -> None:
    assert len(set_variable_round_trips()) == 10


@pytest.mark.parametrize(("line", "stored"), set_variable_round_trips())
def test_splitter_yields_what_asterisk_stored(line: str, stored: str) -> None:
    argv = split_arguments(line)
    assert len(argv) == 4
    assert argv[3] == stored


@pytest.mark.parametrize(("line", "stored"), set_variable_round_trips())
def test_set_variable_quotes_every_traced_value_so_it_reads_back(line: str, stored: str) -> None:
    name = split_arguments(line)[2]
    command = set_variable(name, stored)
    assert split(command) == ["SET", "VARIABLE", name, stored]
    if quote(stored) in line:
        assert command == (line + "\n").encode()


@pytest.mark.parametrize(
    "line",
    ["SET VARIABLE GK_SINGLE 'single quoted'", "SET VARIABLE GK_UNQUOTED two words"],
)
def test_splitter_gives_the_extra_argument_that_made_asterisk_answer_520(line: str) -> None:
    assert line in session(1).lines(Kind.SERVER)
    assert len(split_arguments(line)) == 5


def test_splitter_passes_exec_only_the_first_unquoted_word_as_asterisk_logged() -> None:
    assert "AGI Script Executing Application: (NoOp) Options: (unquoted)" in session(1).log_messages("res_agi.c")
    assert split_arguments("EXEC NoOp unquoted words")[2] == "unquoted"


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ('""', [""]),
        ('a "" b', ["a", "", "b"]),
        ('a"b c"d', ["ab cd"]),
        ("a\\ b", ["a b"]),
        ("\\\\", ["\\"]),
        ('\\"x', ['"x']),
        ("x\\", ["x"]),
        ("  a \t b  ", ["a", "b"]),
        ('"unterminated quote', ["unterminated quote"]),
        ("", []),
    ],
)
def test_splitter_edge_cases(line: str, argv: list[str]) -> None:
    assert split_arguments(line) == argv


def test_splitter_keeps_at_most_127_arguments() -> None:
    assert split_arguments(" ".join(str(n) for n in range(200))) == [str(n) for n in range(127)]


# --------------------------------------------------------------------------------------------------
# quote() and command lines


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("", '""'),
        ("allow", '"allow"'),
        ('say "hi" now', '"say \\"hi\\" now"'),
        ("C:\\dir\\file", '"C:\\\\dir\\\\file"'),
        ("trailing\\", '"trailing\\\\"'),
        ("'single'", "\"'single'\""),
        ("${EXTEN}", '"${EXTEN}"'),
        ("tab\there", '"tab\there"'),
    ],
)
def test_quote(value: str, quoted: str) -> None:
    assert quote(value) == quoted
    assert split_arguments(quoted) == [value]


@pytest.mark.parametrize("value", ["a\nEXEC System(x)", "a\rb", "a\x00b", "\n", "\r\n"])
def test_quote_refuses_values_that_cannot_be_sent_safely(value: str) -> None:
    with pytest.raises(ValueError, match="LF, CR or NUL"):
        quote(value)
    with pytest.raises(ValueError, match="LF, CR or NUL"):
        set_variable(GATEKEEPER_REASON, value)


@settings(max_examples=500, database=None, deadline=None)
@given(value=SAFE_TEXT)
def test_quoted_value_is_always_exactly_one_argument(value: str) -> None:
    assert split_arguments(quote(value)) == [value]
    command = set_variable(GATEKEEPER_RESULT, value)
    assert split(command) == ["SET", "VARIABLE", GATEKEEPER_RESULT, value]


@settings(max_examples=300, database=None, deadline=None)
@given(first=SAFE_TEXT, second=SAFE_TEXT)
def test_no_value_can_inject_an_argument_into_its_neighbour(first: str, second: str) -> None:
    command = format_command("EXEC", first, second)
    assert split(command) == ["EXEC", first, second]


@settings(max_examples=300, database=None, deadline=None)
@given(prefix=SAFE_TEXT, bad=st.sampled_from("\n\r\x00"), suffix=SAFE_TEXT)
def test_no_value_can_start_a_second_command(prefix: str, bad: str, suffix: str) -> None:
    with pytest.raises(ValueError, match="LF, CR or NUL"):
        format_command("SET VARIABLE", "X", prefix + bad + suffix)


def test_values_are_sent_as_their_exact_bytes() -> None:
    undecodable = parse_environment(b"agi_calleridname: Caf\xe9\n\n").calleridname
    assert set_variable("X", undecodable) == b'SET VARIABLE X "Caf\xe9"\n'
    with pytest.raises(ValueError):  # a lone surrogate has no bytes at all
        set_variable("X", "\ud800")


def test_helpers_write_the_traced_command_lines() -> None:
    sent = {(line + "\n").encode() for conv in all_conversations() for line in conv.lines(Kind.SERVER)}
    assert get_variable(GATEKEEPER_CAMPAIGN) in sent
    assert get_variable("CALLERID(num)") in sent
    assert verbose("gatekeeper says hello", 1) in sent
    assert set_variable("GK_QUOTES", 'say "hi" now') in sent
    assert set_variable(GATEKEEPER_RESULT, 'DENY reason="dnc list" path=C:\\x') in sent
    assert format_command("NOOP") in sent
    assert format_command("CHANNEL STATUS") in sent
    mset = exec_mset([(GATEKEEPER_RESULT, "BLOCK"), (GATEKEEPER_REASON, "no-basis"), (GATEKEEPER_DECISION_ID, "d-42")])
    assert mset in sent


def test_exec_mset_exact_bytes() -> None:
    assert exec_mset([("A", "1"), ("B", "2"), ("C", "3")]) == b'EXEC MSet "A=1,B=2,C=3"\n'


def test_get_full_variable_quotes_the_expression() -> None:
    assert (
        get_full_variable("${EXTEN}-${GATEKEEPER_CAMPAIGN}") == b'GET FULL VARIABLE "${EXTEN}-${GATEKEEPER_CAMPAIGN}"\n'
    )


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("A", "x,B=y")],
        [("A", "x=y")],
        [("A", "has space")],
        [("A", 'q"uote')],
        [("A", "back\\slash")],
        [("A", "${SHELL(id)}")],
        [("A", "par(en")],
        [("A", "line\nbreak")],
        [("A=B", "x")],
        [("1A", "x")],
        [("A B", "x")],
        [(f"V{n}", "x") for n in range(25)],
    ],
)
def test_exec_mset_refuses_what_mset_would_split_or_interpret(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        exec_mset(pairs)


def test_exec_mset_takes_24_pairs_and_empty_values() -> None:
    line = exec_mset([(f"V{n}", "") for n in range(24)])
    assert split(line)[2].count("=") == 24


@pytest.mark.parametrize("name", ["", "A B", 'A"', "A\\", "A\n", "${X}", "X(a b)", "-X"])
def test_variable_names_are_checked_not_quoted(name: str) -> None:
    with pytest.raises(ValueError):
        get_variable(name)
    with pytest.raises(ValueError):
        set_variable(name, "v")


@pytest.mark.parametrize("command", ["", "SET  VARIABLE", " NOOP", "GET\tVARIABLE", 'EXEC "x"', "1NOOP"])
def test_command_words_must_be_plain_tokens(command: str) -> None:
    with pytest.raises(ValueError, match="command words"):
        format_command(command)


def test_int_arguments_are_written_bare_and_bools_refused() -> None:
    assert format_command("VERBOSE", "x", 3) == b'VERBOSE "x" 3\n'
    with pytest.raises(TypeError):
        format_command("VERBOSE", "x", True)
    with pytest.raises(ValueError):
        verbose("x", -1)


def test_command_line_may_not_exceed_what_asterisk_reads_as_one_command() -> None:
    overhead = len(b'SET VARIABLE X ""\n')
    fits = set_variable("X", "a" * (MAX_COMMAND_LINE_BYTES - overhead))
    assert len(fits) == MAX_COMMAND_LINE_BYTES == 2047
    with pytest.raises(ValueError, match="separate command"):
        set_variable("X", "a" * (MAX_COMMAND_LINE_BYTES - overhead + 1))
    with pytest.raises(ValueError, match="separate command"):
        set_variable("X", "é" * 1100)  # 2200 bytes of UTF-8


# --------------------------------------------------------------------------------------------------
# the environment block


def env_bytes(conv: Conversation) -> bytes:
    return b"".join(event.data for event in conv.environment)


def test_environment_of_session_1_with_query_string_and_agi_args() -> None:
    env = parse_environment(env_bytes(session(1)))
    assert env == AgiEnvironment(
        network=True,
        network_script="check?campaign=acme",
        request="agi://127.0.0.1:4574/check?campaign=acme",
        channel="Local/0612345678@outbound-qs-00000001;2",
        language="en",
        type="Local",
        uniqueid="1795859863.3",
        version="23.4.1",
        callerid="unknown",
        calleridname="unknown",
        callingpres=67,
        callingani2="0",
        callington="0",
        callingtns="0",
        dnid="unknown",
        rdnis="unknown",
        context="outbound-qs",
        extension="0612345678",
        priority="1",
        enhanced="0.0",
        accountcode="",
        threadid="140677384238784",
        args=("0612345678", "second arg"),
    )
    assert dict(env.extra) == {}
    assert env.script() == AgiScript("check", {"campaign": "acme"})


@pytest.mark.parametrize("conv", [c for c in all_conversations() if c.environment and not c.environment_elided])
def test_every_traced_environment_block_parses(conv: Conversation) -> None:
    values = conv.environment_values()
    env = parse_environment(env_bytes(conv))
    assert env.request == values["agi_request"]
    assert env.channel == values["agi_channel"]
    assert env.uniqueid == values["agi_uniqueid"]
    assert env.accountcode == ""
    assert env.network_script == values["agi_network_script"]
    assert env.script().name == "check"


def test_environment_parser_is_incremental() -> None:
    parser = EnvironmentParser()
    lines = [event.data for event in session(2).environment]
    for line in lines[:-1]:
        assert parser.feed_line(line) is None
        assert not parser.done
    env = parser.feed_line(lines[-1])
    assert env is not None
    assert parser.done
    assert parser.environment is env
    assert env.network_script == "check"
    assert env.args == ()
    assert env.script() == AgiScript("check", {})
    with pytest.raises(RuntimeError):
        parser.feed_line(b"agi_late: x\n")


def test_environment_keeps_values_exactly_but_strips_the_separator_space() -> None:
    env = parse_environment(
        b"agi_accountcode: \nagi_arg_1:  two leading\nagi_arg_2: trailing  \n"
        b"agi_calleridname: a: b\nagi_custom_key: x\n\n"
    )
    assert env.accountcode == ""
    assert env.args == (" two leading", "trailing  ")
    assert env.calleridname == "a: b"
    assert env.extra == {"agi_custom_key": "x"}
    assert env.callingpres is None
    assert env.network_script is None
    assert not env.network


def test_environment_tolerates_a_stray_cr_and_lines_without_lf() -> None:
    parser = EnvironmentParser()
    assert parser.feed_line(b"agi_channel: SIP/x-1\r\n") is None
    assert parser.feed_line(b"agi_accountcode: \r") is None
    env = parser.feed_line(b"\r\n")
    assert env is not None
    assert env.channel == "SIP/x-1"
    assert env.accountcode == ""


def test_environment_keeps_undecodable_bytes_exactly() -> None:
    env = parse_environment(b"agi_calleridname: Caf\xe9\n\n")
    assert env.calleridname.encode("utf-8", "surrogateescape") == b"Caf\xe9"


def test_environment_line_length_is_bounded() -> None:
    parser = EnvironmentParser(max_line_bytes=64)
    assert parser.feed_line(b"agi_channel: " + b"x" * 51 + b"\n") is None
    with pytest.raises(LineTooLong):
        parser.feed_line(b"agi_request: " + b"x" * 52 + b"\n")


def test_environment_line_count_is_bounded() -> None:
    parser = EnvironmentParser(max_lines=3)
    for n in range(1, 4):
        parser.feed_line(f"agi_arg_{n}: x\n".encode())
    with pytest.raises(TooManyLines):
        parser.feed_line(b"agi_arg_4: x\n")


@pytest.mark.parametrize(
    "block",
    [
        b"agi_channel:x\n\n",
        b"agi_channel\n\n",
        b"agi_channel :x\n\n",
        b": value\n\n",
        b"agi channel: x\n\n",
        b"agi_channel: a\nagi_channel: b\n\n",
        b"agi_arg_1: a\nagi_arg_3: c\n\n",
        b"agi_callingpres: sixty-seven\n\n",
        b"agi_channel: a\nagi_request: b",
    ],
)
def test_malformed_environment_is_a_protocol_error(block: bytes) -> None:
    with pytest.raises(MalformedEnvironment):
        parse_environment(block)


def test_an_embedded_lf_is_not_one_line() -> None:
    with pytest.raises(MalformedEnvironment):
        EnvironmentParser().feed_line(b"agi_channel: a\nagi_request: b\n")


def test_protocol_errors_do_not_quote_the_line() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_environment(b"agi_extension 0612345678\n\n")
    assert "0612345678" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# the script and its query parameters


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("check", AgiScript("check", {})),
        ("check?campaign=acme&number=0612345678", AgiScript("check", {"campaign": "acme", "number": "0612345678"})),
        ("agi://127.0.0.1:4574/check?campaign=acme", AgiScript("check", {"campaign": "acme"})),
        ("AGI://gk/check?campaign=acme", AgiScript("check", {"campaign": "acme"})),
        ("hagi://gk.example/check?a=1", AgiScript("check", {"a": "1"})),
        ("agi://127.0.0.1:4573", AgiScript("", {})),
        ("agi://127.0.0.1:4573/", AgiScript("", {})),
        ("check?number=+31612345678", AgiScript("check", {"number": "+31612345678"})),
        ("check?number=%2B31612345678", AgiScript("check", {"number": "+31612345678"})),
        ("check?name=Caf%C3%A9%20Noir", AgiScript("check", {"name": "Café Noir"})),
        ("check?a=1&&b=&flag", AgiScript("check", {"a": "1", "b": "", "flag": ""})),
        ("check?x=a=b", AgiScript("check", {"x": "a=b"})),
        ("dir/my%20script?x=1", AgiScript("dir/my script", {"x": "1"})),
    ],
)
def test_parse_agi_script(value: str, expected: AgiScript) -> None:
    assert parse_agi_script(value) == expected
    assert dict(parse_agi_script(value).params) == dict(expected.params)


@pytest.mark.parametrize(
    "value",
    [
        "check?campaign=a&campaign=b",
        "check?=x",
        "check?a=%zz",
        "check?a=%4",
        "check?a=%ff",
        "check?a=%0Aline",
        "check?a=%00",
        "check?a=tab\there",
        "check%0D",
        "check?" + "&".join(f"p{n}=1" for n in range(33)),
        "check?a=" + "x" * 3000,
    ],
)
def test_parse_agi_script_rejects(value: str) -> None:
    with pytest.raises(InvalidScript):
        parse_agi_script(value)


def test_script_limits_are_configurable() -> None:
    assert len(parse_agi_script("c?a=1&b=2", max_params=2).params) == 2
    with pytest.raises(InvalidScript):
        parse_agi_script("c?a=1&b=2&c=3", max_params=2)
    with pytest.raises(InvalidScript):
        parse_agi_script("c" * 11, max_chars=10)


# --------------------------------------------------------------------------------------------------
# replies


def expected_kind(line: str) -> type[Reply] | None:
    """What each traced reply line is, by its first characters (None: inside a usage block)."""
    if line == "HANGUP":
        return Hangup
    if line.startswith("200 "):
        return Success
    if line.startswith("510 "):
        return InvalidCommand
    if line.startswith("511 "):
        return DeadChannel
    if line.startswith("520 "):
        return UsageError
    return None


@pytest.mark.parametrize("conv", all_conversations(), ids=lambda conv: f"{conv.file}:{conv.title[:20]}")
def test_every_traced_reply_line_parses_to_its_typed_outcome(conv: Conversation) -> None:
    parser = ReplyParser()
    for event in conv.after_environment:
        if event.kind is not Kind.ASTERISK:
            continue
        reply = parser.feed_line(event.data)
        kind = expected_kind(event.text)
        if kind is None:
            assert reply is None
            assert parser.in_usage_block
        else:
            assert isinstance(reply, kind), event.text
    assert not parser.in_usage_block


def test_traced_reply_values() -> None:
    data = session(1).asterisk_bytes(include_environment=False)
    replies = parse_replies(data)
    assert replies[0] == Success(1, "acme")
    assert replies[1] == Success(0)
    assert replies[2] == Success(1, "")
    assert replies[3] == Success(1, "0612345678-acme")
    assert Success(1, 'DENY reason="dnc list" path=C:\\x') in replies
    assert Success(1, "${EXTEN} not expanded?") in replies
    assert Success(1, "xyn") in replies
    assert Success(-2) in replies
    assert InvalidCommand("Invalid or unknown command") in replies
    assert replies.count(UsageError("Sets a variable to the current channel.")) == 2
    usages = [reply for reply in replies if isinstance(reply, UsageError)]
    assert usages[2].text.startswith("Executes <replaceable>application</replaceable> with given")
    assert usages[2].text.count("\n") == 2
    assert usages[3].text.endswith("Example return code: 200 result=1 (testvariable)")


def test_hangup_lines_are_outcomes_wherever_they_come() -> None:
    data = b"HANGUP\n200 result=0\nHANGUP\nHANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n"
    assert parse_replies(data) == [Hangup(), Success(0), Hangup(), Hangup(), DeadChannel()]


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"200 result=1 (acme)\n", Success(1, "acme")),
        (b"200 result=1 (acme)   \n", Success(1, "acme")),
        (b"200 result=1 ( padded )\n", Success(1, " padded ")),
        (b"200 result=0 \n", Success(0)),
        (b"200 result=1 (a (b) c)\n", Success(1, "a (b) c")),
        (b"200 result=1 (a) b (c)\n", Success(1, "a) b (c")),
        (b"200 result=-1\n", Success(-1)),
        (b"200 result=0 endpos=1234\n", Success(0, None, "endpos=1234")),
        (b"200 result=1 (timeout) endpos=8000\n", Success(1, "timeout", "endpos=8000")),
        (b"200 result=1 (speech) endpos=0 results=1 score0=90\n", Success(1, "speech", "endpos=0 results=1 score0=90")),
        (b"200 result=1 (x)\r\n", Success(1, "x")),
        (b"HANGUP \n", Hangup()),
        (b"510 Invalid or unknown command\n", InvalidCommand()),
        (b"511 Command Not Permitted on a dead channel or intercept routine \n", DeadChannel()),
        (
            b"520 Invalid command syntax.  Proper usage not available.\n",
            UsageError("Invalid command syntax.  Proper usage not available."),
        ),
    ],
)
def test_reply_lines(line: bytes, reply: Reply) -> None:
    assert ReplyParser().feed_line(line) == reply


def test_endpos() -> None:
    assert Success(0, None, "endpos=1234").endpos == 1234
    assert Success(1, "dtmf", "endpos=-1").endpos == -1
    assert Success(1, "acme").endpos is None


def test_usage_block_lines_are_text_even_when_they_look_like_replies() -> None:
    parser = ReplyParser()
    assert parser.feed_line(b"520-Invalid command syntax.  Proper usage follows:\n") is None
    assert parser.feed_line(b"200 result=1 (testvariable)\n") is None
    assert parser.feed_line(b"HANGUP\n") is None
    assert parser.feed_line(b"520 End of proper usage. \n") == UsageError("200 result=1 (testvariable)\nHANGUP")
    assert not parser.in_usage_block


@pytest.mark.parametrize(
    "line",
    [
        b"\n",
        b"201 result=1\n",
        b"200\n",
        b"200 result=\n",
        b"200 result=x\n",
        b"200 result=1 (unclosed\n",
        b"200 result=99999999999\n",
        b"200 Result=1\n",
        b"HANGUPX\n",
        b"hangup\n",
        b"520 End of proper usage.\n",
        b"503 result=-2 Memory allocation failure\n",
        b"agi_network: yes\n",
    ],
)
def test_anything_else_is_an_unexpected_reply(line: bytes) -> None:
    with pytest.raises(UnexpectedReply):
        ReplyParser().feed_line(line)


def test_reply_limits() -> None:
    with pytest.raises(LineTooLong):
        ReplyParser(max_line_bytes=16).feed_line(b"200 result=1 (" + b"x" * 16 + b")\n")
    parser = ReplyParser(max_usage_lines=2)
    parser.feed_line(b"520-Invalid command syntax.  Proper usage follows:\n")
    parser.feed_line(b"one\n")
    parser.feed_line(b"two\n")
    with pytest.raises(TooManyLines):
        parser.feed_line(b"three\n")
    with pytest.raises(UnexpectedReply, match="not terminated"):
        parse_replies(b"520-Invalid command syntax.  Proper usage follows:\ntext\n")
