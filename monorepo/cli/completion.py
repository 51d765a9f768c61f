"""``monorepo completion bash|zsh|fish``: shell completion scripts made from the parser.

The scripts are generated from :func:`monorepo.cli.parser.parser` itself, so a new
flag or command completes without anyone editing them; they complete command names,
each command's options and the global options, and fall back to file names.
"""

from __future__ import annotations

import argparse

from monorepo.cli.parser import subcommands


def _options(p: argparse.ArgumentParser) -> list[str]:
    return sorted(
        {s for a in p._actions for s in a.option_strings if s.startswith("--") or len(s) == 2}
    )


def _summary(top: argparse.ArgumentParser) -> dict[str, str]:
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {c.dest: str(c.help or "") for c in action._choices_actions}
    return {}


def script(shell: str, top: argparse.ArgumentParser) -> str:
    """The completion script for *shell* (``bash``, ``zsh`` or ``fish``)."""
    commands = subcommands(top)
    if shell == "bash":
        return _bash(top, commands)
    if shell == "zsh":
        return _zsh(top, commands)
    return _fish(top, commands)


def _bash(top: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser]) -> str:
    cases = "".join(
        f'        {name}) opts="{" ".join(_options(p))}{_nested(p)}" ;;\n'
        for name, p in sorted(commands.items())
    )
    top_opts = " ".join([*sorted(commands), *_options(top)])
    return (
        "# bash completion for monorepo (`monorepo completion bash`)\n"
        "_monorepo() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" cmd="" w i\n'
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
        '        w="${COMP_WORDS[i]}"\n'
        '        case "$w" in\n'
        "            --project|--cache-dir|--color) ((i++)) ;;\n"
        "            -*) ;;\n"
        '            *) cmd="$w"; break ;;\n'
        "        esac\n"
        "    done\n"
        "    local opts\n"
        '    case "$cmd" in\n'
        f"{cases}"
        f'        *) opts="{top_opts}" ;;\n'
        "    esac\n"
        '    COMPREPLY=($(compgen -W "$opts" -- "$cur"))\n'
        "}\n"
        "complete -o default -F _monorepo monorepo\n"
    )


def _nested(p: argparse.ArgumentParser) -> str:
    inner = subcommands(p)
    return (" " + " ".join(sorted(inner))) if inner else ""


def _zsh(top: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser]) -> str:
    summary = _summary(top)
    described = "\n".join(
        f"        '{name}:{summary.get(name, '').replace(chr(39), '')}'"
        for name in sorted(commands)
    )
    cases = "".join(
        f"        {name}) compadd -- {' '.join(_options(p))}{_nested(p)} ;;\n"
        for name, p in sorted(commands.items())
    )
    return (
        "#compdef monorepo\n"
        "# zsh completion for monorepo (`monorepo completion zsh`)\n"
        "_monorepo() {\n"
        "    local -a commands\n"
        "    commands=(\n"
        f"{described}\n"
        "    )\n"
        "    if (( CURRENT == 2 )); then\n"
        "        _describe 'command' commands\n"
        f"        compadd -- {' '.join(_options(top))}\n"
        "        return\n"
        "    fi\n"
        "    case ${words[2]} in\n"
        f"{cases}"
        "    esac\n"
        "    _files\n"
        "}\n"
        "compdef _monorepo monorepo\n"
    )


def _fish(top: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser]) -> str:
    summary = _summary(top)
    lines = ["# fish completion for monorepo (`monorepo completion fish`)"]
    for name in sorted(commands):
        text = summary.get(name, "").replace("'", "")
        lines.append(f"complete -c monorepo -f -n '__fish_use_subcommand' -a {name} -d '{text}'")
    for option in _options(top):
        lines.append(f"complete -c monorepo {_fish_flag(option)}")
    for name, p in sorted(commands.items()):
        for option in _options(p):
            lines.append(
                f"complete -c monorepo -n '__fish_seen_subcommand_from {name}' {_fish_flag(option)}"
            )
        for inner in sorted(subcommands(p)):
            lines.append(
                f"complete -c monorepo -f -n '__fish_seen_subcommand_from {name}' -a {inner}"
            )
    return "\n".join(lines) + "\n"


def _fish_flag(option: str) -> str:
    return f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
