"""``python tests/fakes/run_with_fake_discord.py ARGS``: the personae CLI, with discord.py pointed at a fake.

discord.py's endpoints are class attributes (see ``FakeDiscord.patch_discord``),
so a ``personae run`` subprocess cannot be pointed at a fake through bot.toml.
This sets them from ``FAKE_DISCORD_REST`` and ``FAKE_DISCORD_GATEWAY`` and
then runs the real command line, unchanged.
"""

from __future__ import annotations

import os
import sys

import discord.gateway
import discord.http
import yarl

from personae.app.cli import main

discord.http.Route.BASE = os.environ["FAKE_DISCORD_REST"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
sys.exit(main(sys.argv[1:]))
