"""Structure-aware chunking: split each section separately, by paragraphs first, within a token budget."""
from __future__ import annotations

from dataclasses import dataclass

from ingest.documents import SECTION_SEPARATOR, Chunk, LoadedDocument


@dataclass(frozen=True)
class ChunkingOptions:
    """How documents are cut into chunks."""

    chunk_tokens: int = 200  # leaves room for the heading prefix within MiniLM's 256-token window
    overlap_tokens: int = 32  # tokens repeated between neighbouring chunks of one section

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")


class Chunker:
    """Cuts a LoadedDocument into Chunks counted in the embedder's own tokens."""

    def __init__(self, tokenizer, options: ChunkingOptions = ChunkingOptions()) -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter  # slow import: only when chunking

        self.options = options
        self._splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer,
            chunk_size=options.chunk_tokens,
            chunk_overlap=options.overlap_tokens,
            separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
            keep_separator="end",
            strip_whitespace=True,
        )

    def chunk(self, document: LoadedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        offset = 0
        for section in document.sections:
            search_from = 0
            for piece in self._splitter.split_text(section.text):
                # The splitter's own start_index guess fails on repeated text; find it ourselves.
                local = section.text.find(piece, search_from)
                if local < 0:
                    local = section.text.find(piece)
                search_from = local + 1
                start = offset + local
                chunks.append(Chunk(
                    text=piece,
                    ordinal=len(chunks),
                    start=start,
                    end=start + len(piece),
                    heading=section.heading,
                    page=section.page,
                    anchor=section.anchor,
                    title=document.title,
                ))
            offset += len(section.text) + len(SECTION_SEPARATOR)
        return chunks
