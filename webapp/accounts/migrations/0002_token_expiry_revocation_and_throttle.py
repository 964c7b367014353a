# API tokens expire and can be revoked; login and token-creation attempts are counted (ThrottleEvent).

import datetime as dt

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def expire_existing_tokens(apps, schema_editor):
    """Tokens made before expiry existed get the configured lifetime from their creation (an old one: expired)."""
    ApiToken = apps.get_model("accounts", "ApiToken")
    lifetime = dt.timedelta(days=settings.STUDIO_TOKEN_LIFETIME_DAYS)
    for token in ApiToken.objects.only("pk", "created"):
        ApiToken.objects.filter(pk=token.pk).update(expires=token.created + lifetime)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='apitoken',
            name='expires',
            field=models.DateTimeField(default=django.utils.timezone.now, help_text='refused from then on'),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='apitoken',
            name='revoked',
            field=models.DateTimeField(blank=True, help_text='when its owner revoked it (refused since)', null=True),
        ),
        migrations.CreateModel(
            name='ThrottleEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('scope', models.CharField(max_length=16)),
                ('key', models.CharField(max_length=200)),
                ('created', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
            ],
            options={
                'indexes': [models.Index(fields=['scope', 'key', 'created'], name='throttle_scope_key_created')],
            },
        ),
        # Last: on PostgreSQL a table whose rows were updated in this transaction cannot be altered after.
        migrations.RunPython(expire_existing_tokens, migrations.RunPython.noop),
    ]
