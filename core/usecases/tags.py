"""Tags: Regular and Negative, at most one Negative per project, names unique per project (any case)."""
from __future__ import annotations

import builtins
from collections.abc import Iterable

from .. import errors
from ..model import Tag, TagType
from ..rules import MAX_TAGS_PER_PROJECT, clean_description, clean_name, parse_tag_type
from .base import UseCase

NEGATIVE_NAME = "Negative"


class Tags(UseCase):
    def create(self, project_id: str, name: str, type: TagType | str = TagType.Regular, description: str = "") -> Tag:
        self.scope.require_write("create tags")
        tag_type, name = parse_tag_type(type), clean_name(name, "tag")
        description = clean_description(description, "tag")
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            tags = uow.tags.list(project_id)
            _check_new_name(tags, name)
            if tag_type == TagType.Negative:
                _check_no_negative(tags)
            _check_tag_limit(len(tags))
            tag = Tag(project_id=project_id, name=name, type=tag_type, description=description or "")
            if uow.tags.add_if_absent(tag).id != tag.id:  # a concurrent create took the name first
                raise _duplicate(name)
            uow.commit()
            return tag

    def list(self, project_id: str, iteration_id: str | None = None) -> list[Tag]:
        """The project's tags with their image counts; with `iteration_id`, those that iteration was trained on."""
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            tags = uow.tags.list(project_id)
            if iteration_id:
                trained = set(self.iteration(uow, project_id, iteration_id).tag_ids)
                tags = [t for t in tags if t.id in trained]
            return tags

    def get(self, project_id: str, tag_id: str) -> Tag:
        with self.deps.uow() as uow:
            self.tag(uow, project_id, tag_id, "NotFoundTag")
            return next(t for t in uow.tags.list(project_id) if t.id == tag_id)

    def update(self, project_id: str, tag_id: str, *, name: str | None = None, description: str | None = None,
               type: TagType | str | None = None) -> Tag:
        self.scope.require_write("change tags")
        with self.deps.uow() as uow:
            tag = self.tag(uow, project_id, tag_id)
            tags = uow.tags.list(project_id)
            tag = next(t for t in tags if t.id == tag.id)  # with its image count
            if name is not None:
                name = clean_name(name, "tag")
                _check_new_name([t for t in tags if t.id != tag.id], name)
                tag.name = name
            if description is not None:
                tag.description = clean_description(description, "tag")
            if type is not None and parse_tag_type(type) != tag.type:
                new_type = parse_tag_type(type)
                if new_type == TagType.Negative:
                    _check_no_negative(tags)
                    tagged = uow.images.list(project_id, tag_ids=[tag.id]) if tag.image_count else []
                    if any(len(i.tag_ids) > 1 for i in tagged):
                        raise errors.NegativeAndRegularTag(
                            f"tag '{tag.name}' shares images with other tags; it cannot become the Negative tag")
                tag.type = new_type
            uow.tags.update(tag)
            uow.commit()
            return tag

    def delete(self, project_id: str, tag_id: str) -> None:
        self.scope.require_write("delete tags")
        with self.deps.uow() as uow:
            self.tag(uow, project_id, tag_id)
            uow.tags.delete(tag_id)
            uow.commit()

    def get_or_create(self, project_id: str, names: Iterable[str]) -> builtins.list[Tag]:
        """Tags by case-insensitive name (spaces around a name ignored), created on first use; 'negative' means the
        project's Negative tag. Every name and the tag limit are checked before the first tag is created, so a
        refused call creates none. Safe to race: callers creating the same new tag at once all get the one tag
        that was stored."""
        self.scope.require_write("create tags")
        existing = {t.name.lower(): t for t in self.list(project_id)}
        wanted = [clean_name(raw, "tag") for raw in names if raw and raw.strip()]
        new = {n.lower() for n in wanted if n.lower() not in existing and n.lower() != NEGATIVE_NAME.lower()}
        negative = next((t for t in existing.values() if t.type == TagType.Negative), None)
        if any(n.lower() == NEGATIVE_NAME.lower() for n in wanted) and negative is None:
            if NEGATIVE_NAME.lower() in existing:
                raise _regular_named_negative(existing[NEGATIVE_NAME.lower()])
            new.add(NEGATIVE_NAME.lower())
        if new:
            _check_tag_limit(len(existing) + len(new) - 1)
        out: builtins.list[Tag] = []
        for name in wanted:
            if name.lower() == NEGATIVE_NAME.lower():
                tag = next((t for t in existing.values() if t.type == TagType.Negative), None) \
                    or self._named(project_id, NEGATIVE_NAME, TagType.Negative, len(existing))
            else:
                tag = existing.get(name.lower()) or self._named(project_id, name, TagType.Regular, len(existing))
            existing[tag.name.lower()] = tag
            out.append(tag)
        return list({t.id: t for t in out}.values())

    def _named(self, project_id: str, name: str, tag_type: TagType, known: int) -> Tag:
        """The project's tag called `name`, added if absent (each in its own short transaction, so racing callers
        cannot deadlock on several names)."""
        name = clean_name(name, "tag")
        _check_tag_limit(known)
        with self.deps.uow() as uow:
            tag = uow.tags.add_if_absent(Tag(project_id=project_id, name=name, type=tag_type))
            uow.commit()
        if tag_type == TagType.Negative and tag.type != TagType.Negative:
            raise _regular_named_negative(tag)
        return tag


def _regular_named_negative(tag: Tag) -> errors.Conflict:
    return errors.Conflict(f"the tag '{tag.name}' is a Regular tag, so it cannot mark negative images; "
                           "rename it or make it the Negative tag, then tag again", "BadRequestDuplicateTag")


def _duplicate(name: str) -> errors.Conflict:
    return errors.Conflict(f"a tag named '{name}' already exists in this project", "BadRequestDuplicateTag")


def _check_new_name(others: builtins.list[Tag], name: str) -> None:
    if any(t.name.lower() == name.lower() for t in others):
        raise _duplicate(name)


def _check_tag_limit(count: int) -> None:
    if count >= MAX_TAGS_PER_PROJECT:
        raise errors.InvalidInput(f"a project can have at most {MAX_TAGS_PER_PROJECT} tags", "BadRequestTagLimitExceed")


def _check_no_negative(tags: builtins.list[Tag]) -> None:
    if any(t.type == TagType.Negative for t in tags):
        raise errors.InvalidInput("this project already has a Negative tag", "BadRequestTagTypeNegativeExists")
