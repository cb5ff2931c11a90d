"""The programs: the CLI and its commands, the running bot, bot.toml, chat, and the replays that drive a bot."""
