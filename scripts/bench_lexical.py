"""Lexical index choices, measured on a generated corpus (deterministic from --seed) of English,
Chinese, Japanese and Korean chunks with a title, a heading path and a body.

1. CJK tokenization: for each variant, recall and precision of CJK queries of 1-4 characters
   against substring containment (the ground truth), index bytes per chunk and query time
   (top 10 by bm25, interleaved per query across variants). Variants:
   - unicode61: FTS5's default tokenizer, no CJK handling (the baseline)
   - bigram: jinaloc.index.lexical (CJK runs rewritten into bigrams + last character, unicode61)
   - bigram+prefix1: the same with a 1-character prefix index (for 1-character queries)
   - trigram: FTS5's trigram tokenizer, with an instr() scan of the chunk texts for queries of
     1-2 characters (the trigram index cannot answer them)
   - jieba: Chinese word segmentation from PyPI (jieba.cut_for_search), unicode61 on top
2. Identifiers and rare terms (ERR_4711, kubectl-rollout-...): recall@10 and MRR of lexical
   search alone, with the query words joined by OR or by AND, for a bare identifier, the
   identifier plus words from the note, and a question around it with words from elsewhere;
   plus precision@10 of ordinary 2-3 word topic queries (share of the top 10 holding every
   query word) to show what OR costs.

    python scripts/bench_lexical.py [--sizes 20000 100000] [--json PATH] [--md PATH]
"""

from __future__ import annotations

import random
import re
import shutil
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import log, machine, median, parser, percentile, table, write_json  # noqa: E402

from jinaloc.index import lexical  # noqa: E402
from jinaloc.index.store import _connect  # noqa: E402


def _words(s: str) -> list[str]:
    return s.split()


EN = _words(
    "the of and to in is for on with as by at from that this it be are was not or an which "
    "index search query vector model file note chunk text title heading path language token "
    "server client cache memory disk network request response error timeout retry config "
    "deploy build release version branch commit merge review test runner report metric "
    "latency throughput storage backup restore database table column row schema migration "
    "cluster node pod container image volume secret service ingress gateway proxy router "
    "kernel driver module thread process signal socket packet stream buffer queue worker "
    "meeting agenda budget project deadline customer invoice contract team manager design "
    "garden recipe travel weather coffee music library history science planet ocean forest"
)
# Words with diacritics, so folding is exercised by the corpus too.
EN_ACCENTED = _words("café naïve résumé Zürich São Paulo Ångström façade coöperate jalapeño")
ZH = _words(
    "数据 数据库 检索 搜索 索引 向量 模型 文件 笔记 文本 标题 语言 服务器 客户端 缓存 内存 "
    "磁盘 网络 请求 响应 错误 超时 重试 配置 部署 构建 发布 版本 分支 提交 合并 测试 报告 "
    "指标 延迟 吞吐量 存储 备份 恢复 表格 迁移 集群 节点 容器 镜像 服务 网关 代理 线程 进程 "
    "信号 队列 会议 预算 项目 客户 合同 团队 经理 设计 花园 食谱 旅行 天气 咖啡 音乐 历史 "
    "科学 星球 海洋 森林 我们 可以 需要 使用 已经 问题 方法 系统 用户 时间 工作 开发 学习"
)
ZH_GLUE = _words("的 了 在 是 和 与 对 把 被 从")
JA = _words(
    "データ データベース 検索 索引 ベクトル モデル ファイル メモ 文章 見出し 言語 サーバー "
    "クライアント キャッシュ メモリ ディスク 通信 要求 応答 エラー 設定 配備 構築 公開 版 "
    "試験 報告 遅延 保存 復元 移行 容器 会議 予算 顧客 契約 設計 庭 料理 旅行 天気 珈琲 "
    "音楽 歴史 科学 海 森 東京 大阪 仕事 時間 問題 方法 使い方 日本語 勉強 開発"
)
JA_GLUE = _words("の は を に が で と も から まで")
KO = _words(
    "데이터 데이터베이스 검색 색인 벡터 모델 파일 메모 문서 제목 언어 서버 클라이언트 캐시 "
    "메모리 디스크 네트워크 요청 응답 오류 시간 초과 설정 배포 빌드 버전 테스트 보고서 "
    "저장소 백업 복원 마이그레이션 클러스터 노드 컨테이너 회의 예산 프로젝트 고객 계약 "
    "설계 정원 요리 여행 날씨 커피 음악 역사 과학 바다 숲 서울 부산 개발 학습 사용자"
)
KO_GLUE = _words("를 을 는 은 가 이 에서 의 로 와")
CJK_QUERY_LENGTHS = (1, 2, 3, 4)


def _en(rng: random.Random, n: int) -> str:
    words = [rng.choice(EN_ACCENTED) if rng.random() < 0.02 else rng.choice(EN) for _ in range(n)]
    return " ".join(words)


def _zh(rng: random.Random, n: int) -> str:
    out = []
    for i in range(n):
        out.append(rng.choice(ZH))
        out.append(rng.choice(ZH_GLUE) if rng.random() < 0.3 else "")
        if i % 8 == 7:
            out.append(rng.choice("，。"))
    return "".join(out) + "。"


def _ja(rng: random.Random, n: int) -> str:
    out = []
    for i in range(n):
        out.append(rng.choice(JA) + rng.choice(JA_GLUE))
        if i % 6 == 5:
            out.append(rng.choice(["、", "。", "です。", "します。"]))
    return "".join(out) + "。"


def _ko(rng: random.Random, n: int) -> str:
    words = [rng.choice(KO) + (rng.choice(KO_GLUE) if rng.random() < 0.6 else "") for _ in range(n)]
    return " ".join(words) + "."


def make_corpus(n: int, seed: int) -> list[tuple[str, list[str], str]]:
    """(title, heading path, body) for n chunks: 55% English, 15% Chinese, 15% Japanese, 10%
    Korean, 5% English with Chinese or Japanese words in it."""
    rng = random.Random(seed)
    gens = [(_en, 0.55, 60), (_zh, 0.15, 45), (_ja, 0.15, 30), (_ko, 0.10, 35)]
    chunks = []
    for _ in range(n):
        r, mixed = rng.random(), True
        gen, length = _en, 60
        for g, share, size in gens:
            if r < share:
                gen, length, mixed = g, size, False
                break
            r -= share
        title = gen(rng, rng.randint(2, 4))
        heading = [gen(rng, rng.randint(1, 3)) for _ in range(rng.randint(0, 2))]
        body = gen(rng, rng.randint(length // 2, length * 3 // 2))
        if mixed:
            body += " " + rng.choice([_zh, _ja])(rng, 3) + " " + _en(rng, 10)
        chunks.append((title, heading, body))
    return chunks


# --- variants: how each builds its rows and turns a query into SQL ---------------------------


def _nfkc(s: str) -> str:
    return unicodedata.normalize("NFKC", s)


def match(query: str, operator: str = "OR") -> str | None:
    """The phrases `lexical.expression` builds (stems, no common-word pruning), joined by
    `operator`: the AND/OR comparison of docs/lexical.md."""
    phrases = lexical._stemmed(lexical._phrases(query))
    return f" {operator} ".join(phrases) if phrases else None


class Variant:
    name = ""
    tokenize = "unicode61 remove_diacritics 2"
    extra = ""

    def schema(self) -> str:
        return (
            f'CREATE VIRTUAL TABLE t USING fts5(title, heading, body, tokenize="{self.tokenize}",'
            f" content='', contentless_delete=1{self.extra})"
        )

    def fields(self, title, heading, body):
        return _nfkc(title), _nfkc(" / ".join(heading)), _nfkc(body)

    def cjk_match(self, q: str) -> str:
        return '"' + q + '"'

    def run(self, conn, q: str, k: int | None):
        """Chunk ids matching the CJK query q, best first (k=None: all)."""
        limit = f" LIMIT {k}" if k else ""
        sql = f"SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t, 3.0, 2.0, 1.0){limit}"
        return [r[0] for r in conn.execute(sql, (self.cjk_match(q),))]


class Unicode61(Variant):
    name = "unicode61"


class Bigram(Variant):
    name = "bigram"
    tokenize = lexical.TOKENIZE

    def fields(self, title, heading, body):
        # The tokenizers compared: without the stems column, which CJK text never fills.
        return lexical.index_fields(title, heading, body)[:3]

    def cjk_match(self, q: str) -> str:
        return match(q)


class BigramPrefix(Bigram):
    name = "bigram+prefix1"
    extra = ", prefix='1'"


class Trigram(Variant):
    name = "trigram"
    tokenize = "trigram remove_diacritics 1"

    def run(self, conn, q, k):
        if len(q) >= 3:
            return super().run(conn, q, k)
        # A full scan: unranked, so a top k would still need every match.
        ids = [r[0] for r in conn.execute("SELECT id FROM docs WHERE instr(text, ?) > 0", (q,))]
        return ids[:k] if k else ids


class Jieba(Variant):
    name = "jieba"

    def __init__(self):
        import jieba

        jieba.setLogLevel(60)
        self.jieba = jieba

    def _seg(self, s: str) -> str:
        return " ".join(self.jieba.cut_for_search(_nfkc(s)))

    def fields(self, title, heading, body):
        return self._seg(title), self._seg(" / ".join(heading)), self._seg(body)

    def cjk_match(self, q):
        return '"' + " ".join(t for t in self.jieba.cut(q) if t.strip()) + '"'


def variants() -> list[Variant]:
    out = [Unicode61(), Bigram(), BigramPrefix(), Trigram()]
    try:
        out.append(Jieba())
    except ImportError:
        log("jieba not installed: `pip install jieba` to measure it")
    return out


def build(variant: Variant, chunks, path: Path) -> tuple[int, float]:
    """The variant's FTS table (plus, for the trigram variant, the texts it scans) in its own
    file. Returns (bytes of the FTS table, seconds to build)."""
    conn = _connect(str(path))
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute(variant.schema())
    t = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO t(rowid, title, heading, body) VALUES (?, ?, ?, ?)",
        ((i, *variant.fields(*c)) for i, c in enumerate(chunks)),
    )
    conn.execute("COMMIT")
    conn.execute("INSERT INTO t(t) VALUES ('optimize')")
    seconds = time.perf_counter() - t
    conn.execute("VACUUM")
    conn.close()
    size = path.stat().st_size
    if isinstance(variant, Trigram):  # the scanned texts: jinaloc's chunks table has them anyway
        conn = _connect(str(path))
        conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO docs VALUES (?, ?)",
            ((i, "\n".join(variant.fields(*c))) for i, c in enumerate(chunks)),
        )
        conn.execute("COMMIT")
        conn.close()
    return size, seconds


_CJK_RUN = re.compile(lexical._CJK_RUN.pattern)


def cjk_queries(chunks, rng: random.Random, per_length: int) -> list[str]:
    """Substrings of CJK runs in random chunks, per_length of each length, no repeats."""
    runs = []
    for _, _, body in chunks:
        runs.extend(_CJK_RUN.findall(_nfkc(body)))
    queries = []
    for length in CJK_QUERY_LENGTHS:
        seen: set[str] = set()
        candidates = [r for r in runs if len(r) >= length]
        while len(seen) < per_length:
            run = rng.choice(candidates)
            i = rng.randrange(len(run) - length + 1)
            seen.add(run[i : i + length])
        queries.extend(sorted(seen))
    return queries


def bench_cjk(n: int, seed: int, per_length: int, workdir: Path) -> list[dict]:
    chunks = make_corpus(n, seed)
    rng = random.Random(seed + 1)
    queries = cjk_queries(chunks, rng, per_length)
    texts = ["\n".join((_nfkc(t), _nfkc(" / ".join(h)), _nfkc(b))) for t, h, b in chunks]
    cjk_ids = [i for i, s in enumerate(texts) if _CJK_RUN.search(s)]
    truth = {q: {i for i in cjk_ids if q in texts[i]} for q in queries}
    vs = variants()
    rows, conns = {}, {}
    for v in vs:
        path = workdir / f"{v.name}-{n}.db"
        size, seconds = build(v, chunks, path)
        log(f"{n} chunks, {v.name}: {size / n:.0f} B/chunk, built in {seconds:.1f} s")
        conns[v.name] = _connect(str(path))
        rows[v.name] = {"size": size, "build_s": seconds, "times": {L: [] for L in (1, 2, 3, 4)}}
        rows[v.name]["found"] = {L: [0, 0, 0] for L in CJK_QUERY_LENGTHS}  # hit, truth, returned
    for qi, q in enumerate(queries):
        order = vs[qi % len(vs) :] + vs[: qi % len(vs)]  # rotate who runs first
        for v in order:
            conn = conns[v.name]
            got = set(v.run(conn, q, None))
            t = time.perf_counter()
            v.run(conn, q, 10)
            rows[v.name]["times"][len(q)].append(time.perf_counter() - t)
            f = rows[v.name]["found"][len(q)]
            f[0] += len(got & truth[q])
            f[1] += len(truth[q])
            f[2] += len(got)
    text_bytes = sum(len(s.encode()) for s in texts) / n
    out = []
    for v in vs:
        r = rows[v.name]
        row = {
            "chunks": n,
            "variant": v.name,
            "text_bytes_per_chunk": text_bytes,
            "bytes_per_chunk": r["size"] / n,
            "build_s": r["build_s"],
        }
        for L in CJK_QUERY_LENGTHS:
            hit, want, returned = r["found"][L]
            row[f"recall_{L}"] = hit / want if want else float("nan")
            row[f"precision_{L}"] = hit / returned if returned else float("nan")
            row[f"p50_ms_{L}"] = median(r["times"][L]) * 1e3
            row[f"p95_ms_{L}"] = percentile(r["times"][L], 95) * 1e3
        row["precision_min"] = min(row[f"precision_{L}"] for L in CJK_QUERY_LENGTHS)
        out.append(row)
        conns[v.name].close()
    return out


# --- identifiers and rare terms -------------------------------------------------------------


def _pseudo_word(rng: random.Random) -> str:
    syllables = "zor blax quen trif vel mok dran sith pel wux gorb yin"
    return "".join(rng.choice(syllables.split()) for _ in range(3))


def bench_identifiers(n: int, seed: int, needles: int, workdir: Path) -> list[dict]:
    """Each of `needles` English chunks holds a unique identifier; queries ask for it."""
    rng = random.Random(seed + 2)
    chunks = make_corpus(n, seed)
    english = [i for i, (t, h, b) in enumerate(chunks) if not _CJK_RUN.search(t + b)]
    targets = rng.sample(english, needles)
    queries: dict[str, list[tuple[str, int]]] = {"id": [], "id+note words": [], "question": []}
    kinds = [
        lambda j: f"ERR_{4000 + j}",
        lambda j: f"kubectl-rollout-{_pseudo_word(rng)}",
        lambda j: f"0x{rng.getrandbits(32):08x}",
        lambda j: _pseudo_word(rng) + str(j),
    ]
    for j, i in enumerate(targets):
        ident = kinds[j % len(kinds)](j)
        title, heading, body = chunks[i]
        words = body.split()
        at = rng.randrange(len(words))
        chunks[i] = (title, heading, " ".join([*words[:at], ident, *words[at:]]))
        queries["id"].append((ident, i))
        queries["id+note words"].append((f"{rng.choice(words)} {ident} {rng.choice(words)}", i))
        queries["question"].append((f"how do I fix {ident} after the {rng.choice(EN)} upgrade", i))
    path = workdir / f"ident-{n}.db"
    conn = _connect(str(path))
    conn.execute(lexical.fts_schema(conn.execute("SELECT sqlite_version()").fetchone()[0]))
    conn.execute("CREATE TABLE chunks(id INTEGER PRIMARY KEY, file_id INTEGER)")
    conn.execute("BEGIN")
    conn.executemany(
        lexical.INSERT_SQL,
        ((i, *lexical.index_fields(*c)) for i, c in enumerate(chunks)),
    )
    conn.execute("COMMIT")
    # Topic queries: 2-3 ordinary words from a random English note; relevant = holds them all.
    topic = []
    for _ in range(needles):
        words = set(re.findall(r"\w+", chunks[rng.choice(english)][2].lower()))
        topic.append(rng.sample(sorted(words), rng.choice((2, 3))))
    word_sets = [set(re.findall(r"\w+", " ".join((t, *h, b)).lower())) for t, h, b in chunks]
    sql = lexical.bm25_sql()
    out = []
    for op in ("OR", "AND"):
        for kind, qs in queries.items():
            hits, rr, times = 0, 0.0, []
            for q, want in qs:
                expression = match(q, op)
                t = time.perf_counter()
                ids = [r[0] for r in conn.execute(sql, (expression, 10))]
                times.append(time.perf_counter() - t)
                if want in ids:
                    hits += 1
                    rr += 1 / (ids.index(want) + 1)
            out.append(
                {
                    "chunks": n,
                    "operator": op,
                    "queries": kind,
                    "recall@10": hits / len(qs),
                    "MRR@10": rr / len(qs),
                    "p50_ms": median(times) * 1e3,
                }
            )
        precisions, times = [], []
        for words in topic:
            t = time.perf_counter()
            ids = [r[0] for r in conn.execute(sql, (match(" ".join(words), op), 10))]
            times.append(time.perf_counter() - t)
            if ids:
                precisions.append(sum(set(words) <= word_sets[i] for i in ids) / len(ids))
        out.append(
            {
                "chunks": n,
                "operator": op,
                "queries": "topic words (precision@10)",
                "precision@10": sum(precisions) / len(topic),
                "p50_ms": median(times) * 1e3,
            }
        )
    conn.close()
    return out


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--queries", type=int, default=100, help="CJK queries per length")
    p.add_argument("--needles", type=int, default=400, help="identifier queries")
    p.add_argument("--md", type=Path, help="write the markdown tables here")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.queries, args.needles = [2000], 20, 40
    workdir = Path(tempfile.mkdtemp(prefix="bench-lexical-"))
    try:
        cjk, ident = [], []
        for n in args.sizes:
            cjk += bench_cjk(n, args.seed, args.queries, workdir)
            ident += bench_identifiers(n, args.seed, args.needles, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cols = ["chunks", "variant", "text_bytes_per_chunk", "bytes_per_chunk", "build_s"]
    recall = table(cjk, cols + [f"recall_{L}" for L in CJK_QUERY_LENGTHS] + ["precision_min"])
    timing = table(
        cjk,
        ["chunks", "variant"] + [f"p{p}_ms_{L}" for L in CJK_QUERY_LENGTHS for p in (50, 95)],
    )
    ids = table(
        ident, ["chunks", "operator", "queries", "recall@10", "MRR@10", "precision@10", "p50_ms"]
    )
    md = f"### CJK queries\n\n{recall}\n\nQuery time, top 10 (ms):\n\n{timing}\n\n"
    md += f"### Identifiers and rare terms\n\n{ids}\n"
    print(md)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(md)
    write_json(args.json, {"machine": machine(), "args": vars(args), "cjk": cjk, "ids": ident})


if __name__ == "__main__":
    main()
