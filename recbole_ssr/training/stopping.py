"""When a validation score is an improvement: the rule of early stopping (the trainer) and of every "best so far"
(a search trial's best epoch, the best trial of a search)."""

from recbole_ssr.core.report import plain


def improves(score, best, bigger=True, strict=True):
    """The improvement rule of early stopping and of every "best so far": ``score`` beats ``best`` (None: nothing
    yet, so anything does) when it is higher (``bigger``) or lower; with ``strict`` a tie is no improvement."""
    if best is None:
        return True
    if bigger:
        return score > best if strict else score >= best
    return score < best if strict else score <= best


class BestTracker:
    """The best-so-far validation result of a trial, by the trainer's own rule (strict or ``>=``)."""

    def __init__(self, bigger=True, strict=True):
        self.bigger, self.strict = bigger, strict
        self.score, self.result, self.epoch = None, None, None

    def update(self, epoch, score, result):
        score = float(score)
        better = improves(score, self.score, bigger=self.bigger, strict=self.strict)
        if better:
            self.score, self.result, self.epoch = score, plain(dict(result)), int(epoch)
        return better
