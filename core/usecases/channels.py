"""Chat channels bound to projects, collect mode, which images a message brought in, and workspace API keys."""
from __future__ import annotations

import secrets

from .. import errors
from ..model import ChannelBinding, WorkspaceKeys, utcnow
from .base import Deps, UseCase
from .scope import Role
from .tags import Tags


class Channels(UseCase):
    def _workspace(self) -> str:
        if self.scope.workspace is None:
            raise errors.InvalidInput("channels belong to a workspace; call with a workspace scope")
        return self.scope.workspace

    def bind(self, channel_id: str, project_id: str, bound_by: str | None = None) -> ChannelBinding:
        self.scope.require_write("bind channels")
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            binding = ChannelBinding(self._workspace(), channel_id, project_id, None, bound_by)
            uow.channels.put(binding)
            uow.commit()
            return binding

    def binding(self, channel_id: str) -> ChannelBinding | None:
        with self.deps.uow() as uow:
            return uow.channels.get(self._workspace(), channel_id)

    def for_project(self, project_id: str) -> list[ChannelBinding]:
        """The channels bound to a project."""
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            return uow.channels.for_project(project_id)

    def set_collect_mode(self, channel_id: str, tag_names: list[str] | None) -> ChannelBinding:
        """Turn collect mode on with `tag_names` (created if new) or off with None."""
        binding = self.binding(channel_id)
        if binding is None:
            raise errors.NotFound("this channel has no project; bind one first")
        if tag_names is not None:
            tag_names = [t.name for t in Tags(self.deps, self.scope).get_or_create(binding.project_id, tag_names)]
            if not tag_names:
                raise errors.InvalidInput("collect mode needs at least one tag")
        with self.deps.uow() as uow:
            binding.collect_tags = tag_names
            binding.updated_at = utcnow()
            uow.channels.put(binding)
            uow.commit()
            return binding

    def set_keep_untagged(self, channel_id: str, on: bool) -> ChannelBinding:
        """Images posted here without a tag join the project's untagged pool (on) or are ignored (off)."""
        self.scope.require_write("change channel settings")
        binding = self.binding(channel_id)
        if binding is None:
            raise errors.NotFound("this channel has no project; bind one first")
        with self.deps.uow() as uow:
            binding.keep_untagged = bool(on)
            binding.updated_at = utcnow()
            uow.channels.put(binding)
            uow.commit()
            return binding

    def link_message_images(self, channel_id: str, message_ts: str, image_ids: list[str]) -> None:
        with self.deps.uow() as uow:
            uow.messages.link(self._workspace(), channel_id, message_ts, image_ids)
            uow.commit()

    def message_image_ids(self, channel_id: str, message_ts: str) -> list[str]:
        with self.deps.uow() as uow:
            return uow.messages.image_ids(self._workspace(), channel_id, message_ts)

    def keys(self, regenerate: bool = False) -> WorkspaceKeys:
        """The workspace's API keys, generated on first use."""
        self.scope.require_write("read API keys")
        workspace = self.scope.home
        with self.deps.uow() as uow:
            keys = uow.keys.get(workspace)
            if keys is None or regenerate:
                fresh = WorkspaceKeys(workspace, secrets.token_hex(16), secrets.token_hex(16))
                if regenerate:
                    uow.keys.put(fresh)
                    keys = fresh
                else:  # first use: a concurrent first use may store its keys first, and then everyone gets those
                    keys = uow.keys.add_if_absent(fresh)
                uow.commit()
            return keys


def workspace_for_key(deps: Deps, key: str) -> tuple[str, Role] | None:
    """(workspace, role) of a generated API key, or None: how an adapter finds the scope of a caller."""
    if not key:
        return None
    with deps.uow() as uow:
        keys = uow.keys.find(key)
    if keys is None:
        return None
    if secrets.compare_digest(keys.training_key, key):
        return keys.workspace, Role.Training
    return keys.workspace, Role.Prediction
