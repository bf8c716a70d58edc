"""What turning a question and images into model inputs needs (chat template, tokenizer, image processor settings,
special token ids), read from a checkpoint or from a bundle's tokenizer/ folder; edgekit.model.prompt uses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.model.processor import PREPROCESSOR_FILE, ImageProcessorConfig, processor_config_from_dict
from edgekit.model.tokenizer_file import MAX_TOKENIZER_BYTES, load_tokenizer, tokenizer_from_bytes


@dataclass(frozen=True)
class PromptAssets:
    """What turning a question and images into model inputs needs; comes from a checkpoint or a bundle."""

    chat_template: str
    tokenizer_json: Path  # where the tokenizer came from (messages); `tokenizer` is what was read from it
    image: ImageProcessorConfig
    image_token_id: int
    vision_start_token_id: int
    video_token_id: int | None
    spatial_merge_size: int
    tokens_per_second: float = 2.0
    tokenizer: object = field(default=None, compare=False, repr=False)  # tokenizers.Tokenizer

    def __post_init__(self) -> None:
        if self.tokenizer is None:
            object.__setattr__(self, "tokenizer", load_tokenizer(self.tokenizer_json))

    @classmethod
    def from_directory(cls, directory: str | Path) -> "PromptAssets":
        """From config.json, tokenizer and processor files alone (a bundle's tokenizer/ folder: no weights)."""
        from edgekit.safe_files import read_regular

        d = Path(directory)

        def read(name: str) -> bytes | None:
            return read_regular(d / name, max_bytes=MAX_TOKENIZER_BYTES) if (d / name).exists() else None

        return cls.from_files(read, d)

    @classmethod
    def from_files(cls, read, where: Path) -> "PromptAssets":
        """From the same files, each read by `read(name) -> bytes | None` (None: absent): a verified bundle reads
        them through the descriptors it hashed."""
        from edgekit.json_files import parse_json
        from edgekit.model.checkpoint import chat_template_from
        from edgekit.model.config import read_token_ids, read_vision_dims

        def json_file(name: str, *, required: bool = True):
            data = read(name)
            if data is None:
                if required:
                    raise EdgekitError(f"{where / name}: missing")
                return {}
            obj = parse_json(data, str(where / name))
            if not isinstance(obj, dict):
                raise EdgekitError(f"{where / name}: must hold a JSON object, not {type(obj).__name__}")
            return obj

        config = json_file("config.json")
        tok_cfg = json_file("tokenizer_config.json", required=False)
        template = chat_template_from(read, tok_cfg, where)
        if not template:
            raise EdgekitError(
                f"{where}: no chat template (chat_template.jinja or tokenizer_config.json 'chat_template')"
            )
        tok_text = read("tokenizer.json")
        if tok_text is None:
            raise EdgekitError(f"{where / 'tokenizer.json'}: missing tokenizer")
        vision, ids = (
            read_vision_dims(config, str(where / "config.json")),
            read_token_ids(config, str(where / "config.json")),
        )
        image = processor_config_from_dict(json_file(PREPROCESSOR_FILE), where=str(where / PREPROCESSOR_FILE))
        return cls(
            chat_template=template,
            tokenizer_json=where / "tokenizer.json",
            image=image,
            image_token_id=ids.image,
            vision_start_token_id=ids.vision_start,
            video_token_id=ids.video if ids.video >= 0 else None,
            spatial_merge_size=vision.merge,
            tokens_per_second=float(config.get("vision_config", {}).get("tokens_per_second", 2.0)),
            tokenizer=tokenizer_from_bytes(tok_text, where / "tokenizer.json"),
        )

    @classmethod
    def from_checkpoint(cls, ckpt) -> "PromptAssets":
        """From an edgekit.model.checkpoint.Checkpoint (open_checkpoint)."""
        where = ckpt.path / PREPROCESSOR_FILE
        if not where.is_file():
            raise EdgekitError(f"{where}: not found; the image processor settings are needed to build inputs")
        image = processor_config_from_dict(ckpt.preprocessor_config, where=str(where))
        if image.merge_size != ckpt.vision.merge or image.patch_size != ckpt.vision.patch:
            raise EdgekitError(
                f"{where}: merge_size {image.merge_size} / patch_size {image.patch_size} disagree with config.json "
                f"vision_config ({ckpt.vision.merge} / {ckpt.vision.patch}); they must match"
            )
        if not ckpt.chat_template:
            raise EdgekitError(
                f"{ckpt.path}: no chat template (chat_template.jinja, chat_template.json or "
                "tokenizer_config.json 'chat_template'); copy it from the source checkpoint"
            )
        vision_cfg = ckpt.config.get("vision_config", {})
        return cls(
            chat_template=ckpt.chat_template,
            tokenizer_json=Path(ckpt.tokenizer_json),
            image=image,
            image_token_id=ckpt.token_ids.image,
            vision_start_token_id=ckpt.token_ids.vision_start,
            video_token_id=ckpt.token_ids.video if ckpt.token_ids.video >= 0 else None,
            spatial_merge_size=ckpt.vision.merge,
            tokens_per_second=float(vision_cfg.get("tokens_per_second", 2.0)),
        )
