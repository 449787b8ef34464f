from .admin_translation import AdminTranslationTask

__all__ = ["AdminTranslationTask"]
