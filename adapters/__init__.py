"""Platform adapters. Each file holds one :class:`~personae.adapters.base.Adapter` subclass."""
